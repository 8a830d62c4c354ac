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
