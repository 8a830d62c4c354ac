"""Every registered architecture builds for the data's shape and takes a training step."""

import pytest
import torch

from confusion.errors import UnknownNameError
from confusion.models import architecture_names, build_model, family

NAMES = [n for n in architecture_names() if n != "torchvision:NAME"] + ["torchvision:resnet18"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels, size", [(1, 28), (3, 16)])
def test_builds_and_trains_a_step(name, channels, size):
    torch.manual_seed(0)
    model = build_model(name, channels, size, 7)
    x = torch.randn(4, channels, size, size)
    y = torch.randint(0, 7, (4,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert model(x).shape == (4, 7)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_sizes_grow_within_a_family():
    for fam in ("mlp", "cnn", "resnet"):
        counts = [sum(p.numel() for p in build_model(f"{fam}-{s}", 1, 28, 10).parameters()) for s in "sml"]
        assert counts == sorted(counts) and counts[0] < counts[2], (fam, counts)
        assert family(f"{fam}-m") == fam


def test_unknown_names():
    with pytest.raises(UnknownNameError, match="unknown architecture 'cnn-xl'"):
        build_model("cnn-xl", 1, 28, 10)
    with pytest.raises(UnknownNameError, match="unknown torchvision model"):
        build_model("torchvision:not_a_model", 1, 28, 10)


@pytest.mark.parametrize("size", [7, 8, 14, 15])
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_the_eval_pool_gives_what_the_standard_pool_gives(size, layout):
    from confusion.models import MaxPool2x2

    torch.manual_seed(size)
    x = torch.randn(3, 5, size, size).contiguous(memory_format=layout)
    x[0, 1, 2, 3] = float("nan")
    x[1, 2, 0, 0] = float("inf")
    x[2] = -x[2].abs()
    with torch.inference_mode():
        fast, standard = MaxPool2x2()(x), torch.nn.functional.max_pool2d(x, 2)
    torch.testing.assert_close(fast, standard, equal_nan=True, rtol=0, atol=0)
    assert fast.is_contiguous(memory_format=layout) or size % 2  # the next conv gets the layout it expects


@pytest.mark.parametrize("name", ["cnn-s", "cnn-m", "cnn-l"])
def test_pooling_before_the_relu_changes_no_value_or_gradient(name):
    torch.manual_seed(0)
    model = build_model(name, 3, 30, 5)
    # The same weights with the usual order: ReLU, then pool.
    usual = []
    for layer in model.layers:
        if isinstance(layer, torch.nn.ReLU) and usual and isinstance(usual[-1], torch.nn.MaxPool2d):
            usual.insert(len(usual) - 1, layer)
        else:
            usual.append(layer)
    usual = torch.nn.Sequential(*usual)
    x = torch.randn(16, 3, 30, 30)
    for mode in (True, False):
        model.train(mode)
        ours = model(x)
        ours.square().sum().backward()
        ours_grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        theirs = usual(x)
        theirs.square().sum().backward()
        assert torch.equal(ours, theirs)
        assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), ours_grads))
        model.zero_grad()


@pytest.mark.parametrize("name", ["cnn-m", "cnn-l", "resnet-s"])
def test_folding_batchnorm_for_inference_keeps_the_predictions(name):
    from confusion.models import folded_for_inference

    torch.manual_seed(0)
    model = build_model(name, 3, 16, 5)
    with torch.no_grad():  # BatchNorm statistics that are not the initial ones
        for _ in range(3):
            model(torch.randn(32, 3, 16, 16) * 3 + 1)
    model.eval()
    folded = folded_for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the model itself is untouched
    x = torch.randn(8, 3, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x).softmax(1), model(x).softmax(1), rtol=0, atol=1e-5)
    plain = build_model("cnn-s", 3, 16, 5)
    assert folded_for_inference(plain) is plain
