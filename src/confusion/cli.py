"""The `confusion` command. Each subcommand is a thin face over a module's Python API.

Errors the user can fix (bad files, names, arrays, a busy run directory) print one line on
stderr and exit with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from . import _terminal as term
from .errors import ConfusionError, InputError

app = typer.Typer(
    name="confusion",
    help=(
        "Find the samples a model finds hard, without labels: train a cheap ensemble, score its "
        "confusion (entropy of the ensemble-averaged prediction, averaged over epochs; bits by "
        "default), then build hard sets, reports and mitigations from it."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class Base(str, Enum):
    bits = "2"
    nats = "e"


def handles_errors(command: Callable) -> Callable:
    """Turn ConfusionError into one stderr line + exit 2, Ctrl-C into exit 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ConfusionError as error:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            print(f"confusion: error: {message}", file=sys.stderr)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            print("confusion: interrupted", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


def _table_path(out: Path | None) -> Path | None:
    if out is not None and out.suffix.lower() not in (".csv", ".parquet"):
        raise InputError(f"--out must end in .csv or .parquet, got {out.name}")
    return out


def _print_score_summary(table, unit: str) -> None:
    rows = []
    for split, part in table.groupby("split", sort=False):
        scores = part["confusion"]
        row = [split, len(part), float(scores.mean()), float(scores.median()), float(scores.quantile(0.9)), float(scores.max())]
        rows.append(row)
    term.table(f"confusion ({unit})", ["split", "samples", "mean", "median", "90th pct", "max"], rows)


# --------------------------------------------------------------------------- score
@app.command()
@handles_errors
def score(
    run: Annotated[Optional[Path], typer.Argument(help="Run directory (from `train` or `import`). Omit when using --probs.")] = None,
    probs: Annotated[Optional[Path], typer.Option(help="Score an array file directly: .npy/.npz shaped (members, epochs, samples, classes) or (samples, classes).")] = None,
    logits: Annotated[bool, typer.Option(help="The --probs file holds logits; apply a softmax over classes first.")] = False,
    labels: Annotated[Optional[Path], typer.Option(help="With --probs: .npy of (samples,) class indices (-1 = unknown), copied to the output. Never used for the score.")] = None,
    split: Annotated[Optional[list[str]], typer.Option(help="With RUN: score only this split (repeatable). Default: every split.")] = None,
    base: Annotated[Base, typer.Option(help="Logarithm base: 2 gives bits (default), e gives nats.")] = Base.bits,
    out: Annotated[Optional[Path], typer.Option(help="Write one row per sample to this .csv or .parquet file (columns: sample, split, confusion, confusion_normalized, expected_entropy, disagreement, label).")] = None,
    engine: Annotated[str, typer.Option(help="auto (fused numba kernel when it applies), numpy, or numba.")] = "auto",
):
    """Confusion score of every sample (paper eqs. 1-3): higher = harder, in [0, log C] bits (or nats)."""
    from ._files import write_table_atomic
    from .importing import load_labels, load_predictions
    from .scores import as_four_d, confusion_scores
    from .store import RunStore

    out = _table_path(out)
    if (run is None) == (probs is None):
        raise InputError("give either a run directory or --probs FILE, not both or neither")
    if run is not None:
        if logits or labels is not None:
            raise InputError("--logits and --labels go with --probs; a run store already holds probabilities and labels")
        store = RunStore.open(run)
        chosen = split or store.splits
        total = sum(store.n_samples(s) for s in chosen)
        with term.progress_bar(total, "scoring", "samples") as advance:
            table = store.score_table(chosen, base=base.value, progress=advance)
    else:
        array = load_predictions(probs)
        n_samples, n_classes = as_four_d(tuple(array.shape))[2:]
        label_array = load_labels(labels, n_samples, n_classes) if labels is not None else None
        with term.progress_bar(n_samples, "scoring", "samples") as advance:
            result = confusion_scores(array, base=base.value, logits=logits, engine=engine, progress=advance)
        table = result.to_frame(labels=label_array, split=split[0] if split else "all")
    unit = "bits" if base is Base.bits else "nats"
    if out is not None:
        write_table_atomic(table, out)
        term.info(f"wrote {len(table)} rows to {out}")
    _print_score_summary(table, unit)


# --------------------------------------------------------------------------- import
@app.command("import")
@handles_errors
def import_(
    probs: Annotated[str, typer.Option(help="Predictions: .npy/.npz shaped (members, epochs, samples, classes) or (samples, classes), or a pattern like 'preds/m{member}_e{epoch}.npy' (one (samples, classes) file each).")],
    out: Annotated[Path, typer.Option(help="Run directory to create, or an existing run store to add the split to.")],
    logits: Annotated[bool, typer.Option(help="The file holds logits; a softmax over classes is applied before storing.")] = False,
    labels: Annotated[Optional[Path], typer.Option(help=".npy of (samples,) class indices; -1 = unknown.")] = None,
    split: Annotated[str, typer.Option(help="Name of the split these predictions are for.")] = "val",
    ids: Annotated[Optional[Path], typer.Option(help="Text file with one sample id per line (default: 0..N-1).")] = None,
    classes: Annotated[Optional[str], typer.Option(help="Comma-separated class names (default: 0..C-1).")] = None,
):
    """Turn predictions made by any framework into a run store (float16, chunked along samples)."""
    from .importing import import_predictions

    sample_ids = None
    if ids is not None:
        if not ids.is_file():
            raise InputError(f"ids file {ids} does not exist")
        sample_ids = [line.strip() for line in ids.read_text(encoding="utf-8").splitlines() if line.strip()]
    class_names = [c.strip() for c in classes.split(",")] if classes else None
    store = import_predictions(probs, out, logits=logits, labels=labels, split=split, sample_ids=sample_ids, classes=class_names)
    term.info(
        f"imported split {split!r}: {store.n_members} members x {len(store.recorded_epochs)} epochs x "
        f"{store.n_samples(split)} samples x {store.n_classes} classes into {out}"
    )


# --------------------------------------------------------------------------- train
@app.command()
@handles_errors
def train(
    out: Annotated[Path, typer.Option(help="Run directory to create; an existing one with the same settings is resumed.")],
    data: Annotated[str, typer.Option(help="Dataset: fashion-mnist, digits, mnist-5k, imagefolder:PATH or npz:PATH.")] = "fashion-mnist",
    arch: Annotated[str, typer.Option(help="Architecture: mlp-s/m/l, cnn-s/m/l, resnet-s/m/l or torchvision:NAME.")] = "cnn-s",
    members: Annotated[int, typer.Option(help="Ensemble members M (the paper: 3); member i uses seed + i.")] = 3,
    epochs: Annotated[int, typer.Option(help="Training epochs T.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of member 0: initialisation, data order and augmentation follow it.")] = 0,
    record_every: Annotated[int, typer.Option(help="Record predictions every K epochs (the last epoch is always recorded).")] = 1,
    record_train: Annotated[str, typer.Option(help="How train-split predictions are taken: eval (a separate eval-mode pass) or in-loop (from the training forward pass: cheaper, noisier).")] = "eval",
    optimizer: Annotated[str, typer.Option(help="adam or sgd (momentum 0.9, Nesterov).")] = "adam",
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay.")] = 0.0,
    schedule: Annotated[str, typer.Option(help="Learning-rate schedule per step: cosine (down to 1% of --lr) or constant.")] = "cosine",
    batch_size: Annotated[int, typer.Option(help="Training batch size, in samples.")] = 128,
    augment: Annotated[bool, typer.Option(help="Random shifts of up to 2 pixels, and horizontal flips where they keep the label.")] = True,
    limit_train: Annotated[Optional[int], typer.Option(help="Train on a seeded subset of this many training samples.")] = None,
    limit_val: Annotated[Optional[int], typer.Option(help="Record a seeded subset of this many validation samples.")] = None,
    root: Annotated[Optional[Path], typer.Option(help="Directory holding the dataset's files (Fashion-MNIST IDX files).")] = None,
    unlabeled: Annotated[Optional[Path], typer.Option(help="Extra split without labels, scored like the others: .npy/.npz of images or a folder of image files.")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Resize folder images to this many pixels square (default: their size, or 32 if sizes differ).")] = None,
    split_seed: Annotated[int, typer.Option(help="Seed of the train/val split (datasets without one) and of the --limit-* subsets.")] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    precision: Annotated[str, typer.Option(help="auto (bf16 only where the hardware computes in it), fp32, or bf16.")] = "auto",
    workers: Annotated[Optional[int], typer.Option(help="Training processes (default: one per member on the CPU, 1 on CUDA; 0 = in this process).")] = None,
):
    """Train M members that differ only by seed; after every epoch record each member's
    probabilities on every split into the run store. Rerun the same command to resume."""
    from .training import TrainConfig, final_accuracy
    from .training import train as train_ensemble

    config = TrainConfig(
        data=data, arch=arch, members=members, epochs=epochs, seed=seed, record_every=record_every,
        record_train=record_train, optimizer=optimizer, lr=lr, weight_decay=weight_decay, schedule=schedule,
        batch_size=batch_size, augment=augment, limit_train=limit_train, limit_val=limit_val,
        root=str(root) if root else None, unlabeled=str(unlabeled) if unlabeled else None, image_size=image_size,
        split_seed=split_seed, device=device, precision=precision, workers=workers,
    ).check()
    started = time.perf_counter()
    with term.TrainingDisplay(members, epochs) as display:
        store = train_ensemble(config, out, on_event=display)
    accuracy = final_accuracy(store)
    term.info(
        f"{out}: {store.n_members} members x {len(store.recorded_epochs)} recorded epochs of {arch} on {data} "
        f"in {time.perf_counter() - started:.0f} s; ensemble val accuracy at the last epoch {accuracy:.4f}. "
        f"Next: confusion score {out} --out scores.csv"
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
