"""Framework callbacks: PyTorch Lightning (2 members; DDP with 2 ranks) and the HF Trainer."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from confusion.errors import InputError
from confusion.runscores import score_run
from confusion.store import RunStore

JOB = Path(__file__).parent / "lightning_job.py"


def lightning(tmp_path, *args):
    done = subprocess.run([sys.executable, str(JOB), *map(str, args)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def assert_same_scores(callback_run, plain_run):
    recorded, plain = RunStore.open(callback_run), RunStore.open(plain_run)
    assert recorded.recorded_epochs == plain.recorded_epochs == [1, 2, 3]
    np.testing.assert_array_equal(recorded.labels("val"), plain.labels("val"))
    # Both stores hold float16 of the same float32 probabilities: equal up to that rounding.
    np.testing.assert_allclose(recorded.probs("val")[:].astype(np.float64), plain.probs("val")[:].astype(np.float64), atol=1e-3)
    np.testing.assert_allclose(score_run(recorded, "val").confusion, score_run(plain, "val").confusion, atol=1e-3)


def test_lightning_callback_two_members_equals_the_plain_recorder(tmp_path):
    for member in (0, 1):
        lightning(tmp_path, "--out", "callback", "--compare", "plain", "--member", member, "--members", 2)
    assert_same_scores(tmp_path / "callback", tmp_path / "plain")
    recorded = RunStore.open(tmp_path / "callback")
    assert recorded.meta["framework"].startswith("pytorch-lightning")
    # At the last epoch, the input of the MLP's head (32 wide: kept as it is), for both members.
    assert recorded.embedding_epochs(["val"]) == [3]
    assert recorded.embeddings("val", 1, 3).shape == (597, 32)


def test_lightning_callback_keeps_a_reduced_record_when_asked(tmp_path):
    lightning(tmp_path, "--out", "callback", "--compare", "plain", "--member", 0, "--members", 1, "--keep", "reduced")
    recorded, plain = RunStore.open(tmp_path / "callback"), RunStore.open(tmp_path / "plain")
    assert recorded.keep == "reduced" and recorded.recorded_epochs == [1, 2, 3]
    np.testing.assert_allclose(score_run(recorded, "val").confusion, score_run(plain, "val").confusion, atol=1e-3)


def test_lightning_callback_under_ddp_records_every_rank_once(tmp_path):
    lightning(tmp_path, "--out", "callback", "--compare", "plain", "--member", 0, "--members", 1, "--devices", 2)
    assert_same_scores(tmp_path / "callback", tmp_path / "plain")
    recorded = RunStore.open(tmp_path / "callback")
    assert recorded.ended_epochs() == [[1, 2, 3]]
    assert recorded.embedding_epochs(["val"]) == [3]  # gathered from both ranks, in sample order


def test_callbacks_refuse_bad_arguments_at_once(tmp_path):
    from confusion.integrations.lightning import ConfusionCallback as LightningCallback
    from confusion.integrations.transformers import ConfusionCallback as HFCallback

    with pytest.raises(InputError, match="dataloaders must be a dict"):
        LightningCallback(tmp_path / "run", member=0)
    with pytest.raises(InputError, match="member must be in 0..members-1"):
        LightningCallback(tmp_path / "run", member=2, members=2, dataloaders={"val": []})
    with pytest.raises(InputError, match="member must be a non-negative integer"):
        HFCallback(tmp_path / "run", member=-1)
    with pytest.raises(InputError, match="^keep must be raw or reduced"):
        HFCallback(tmp_path / "run", member=0, keep="everything")
    with pytest.raises(InputError, match="needs the Trainer"):
        HFCallback(tmp_path / "run", member=0).on_train_begin(None, None, None)


@pytest.mark.parametrize(
    "module, missing, extra", [("lightning", "pytorch_lightning", "lightning"), ("transformers", "transformers", "transformers")]
)
def test_importing_an_integration_without_its_extra_names_the_extra(module, missing, extra):
    """Issue 27: a bare ModuleNotFoundError named no extra."""
    code = f"import sys; sys.modules[{missing!r}] = None\nimport confusion.integrations.{module}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and f"needs the {extra} extra: pip install 'ensemble-confusion[{extra}]'" in last, result.stderr


def test_lightning_callback_records_views_of_images(tmp_path):
    """Images through the module itself: at the last epoch, the embeddings and the four 2-pixel
    shifts' predictions, each equal to the module's own output on that view."""
    import pytorch_lightning as pl
    import torch
    from sklearn.datasets import load_digits
    from torch.utils.data import DataLoader, TensorDataset

    from confusion.engine import view_of
    from confusion.integrations.lightning import ConfusionCallback

    class Small(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(256, 10))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    digits = load_digits()
    x = torch.tensor(digits.images[:, None] / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    val = DataLoader(TensorDataset(x[1500:], y[1500:]), batch_size=64)
    torch.manual_seed(0)
    model = Small()
    callback = ConfusionCallback(tmp_path / "run", member=0, members=1, dataloaders={"val": val})
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    trainer.fit(model, DataLoader(TensorDataset(x[:1500], y[:1500]), batch_size=64, shuffle=True))
    store = RunStore.open(tmp_path / "run")
    assert store.embedding_epochs(["val"]) == [2] and store.view_epochs(["val"]) == [2]
    assert store.embeddings("val", 0, 2).shape == (297, 64)  # 256 wide, on 64 axes
    views = store.views("val", 0, 2).astype(np.float64)
    assert views.shape == (297, 4, 10)
    with torch.no_grad():
        model.eval()
        expected = torch.softmax(model(view_of(x[1500:], "up")), dim=1).numpy()
    np.testing.assert_allclose(views[:, 2], expected, atol=2e-3)  # float16 storage
    with pytest.raises(InputError, match="views must name each of"):
        ConfusionCallback(tmp_path / "r2", member=0, members=1, dataloaders={"val": val}, views=("tilt",))


def test_hf_callback_records_embeddings_and_views_of_an_image_model(tmp_path):
    """A tiny ViT (random weights, offline) through the Trainer's own loop: at the last epoch the
    classifier's input and the four 2-pixel shifts' predictions."""
    import torch
    from sklearn.datasets import load_digits
    from transformers import Trainer, TrainingArguments, ViTConfig, ViTForImageClassification

    from confusion.engine import view_of
    from confusion.integrations.transformers import ConfusionCallback as HFCallback

    digits = load_digits()
    pixels = torch.tensor(digits.images[:, None] / 16.0, dtype=torch.float32)

    class Images(torch.utils.data.Dataset):
        def __init__(self, start, stop):
            self.start, self.stop = start, stop

        def __len__(self):
            return self.stop - self.start

        def __getitem__(self, i):
            return {"pixel_values": pixels[self.start + i], "labels": int(digits.target[self.start + i])}

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=10
    )
    model = ViTForImageClassification(config)
    arguments = TrainingArguments(
        output_dir=str(tmp_path / "hf"),
        num_train_epochs=2,
        per_device_train_batch_size=64,
        per_device_eval_batch_size=128,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=Images(0, 600), eval_dataset=Images(1500, 1797))
    HFCallback(tmp_path / "run", member=0, members=1).attach(trainer)
    trainer.train()
    store = RunStore.open(tmp_path / "run")
    assert store.recorded_epochs == [1, 2] and store.embedding_epochs(["val"]) == [2] and store.view_epochs(["val"]) == [2]
    assert store.embeddings("val", 0, 2).shape == (297, 16)  # the ViT's 16-wide CLS state, kept as it is
    views = store.views("val", 0, 2).astype(np.float64)
    assert views.shape == (297, 4, 10)
    with torch.no_grad():
        model.eval()
        expected = torch.softmax(model(pixel_values=view_of(pixels[1500:], "left")).logits, dim=1).numpy()
    np.testing.assert_allclose(views[:, 0], expected, atol=2e-3)
