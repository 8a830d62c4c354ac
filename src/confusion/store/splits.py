"""Splits added to or replaced in a run after its epochs are committed (`confusion import`):
listed in run.json only once their data is whole; a replacement is staged beside the split and
swapped in two renames, and a swap a crash cut short is finished or rolled back when the run is
next opened (`recover_swaps`)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._files import write_json_atomic
from ..errors import InputError
from .format import ARRAYS, RUN_FILE, WRITTEN, SplitData, open_group
from .locks import commit_lock
from .signals import forget_split

if TYPE_CHECKING:
    from .run import RunStore

__all__ = ["add_split", "recover_swaps", "replace_split"]


def add_split(store: RunStore, name: str, split: SplitData, fill: Callable[[], None]) -> None:
    """Add a split (e.g. an imported unlabeled one) to a run whose epochs are committed.

    The split is listed in run.json only after `fill` returns, so a crash or error never leaves a
    listed split without its data. On error the arrays are removed again.

    Parameters
    ----------
    store : RunStore
        The run.
    name : str
        The new split's name.
    split : SplitData
        Its sample ids, labels, sources and metadata.
    fill : callable
        Writes the split's predictions for every committed epoch (with `RunStore.write`).
    """
    entry = _filled_split(store, name, split, fill)
    if split.meta:
        store.write_metadata(name, split.ids, split.meta)
    with commit_lock(store.path):
        store.refresh()
        store.meta["splits"][name] = entry
        store.save_meta()


def replace_split(store: RunStore, name: str, split: SplitData, fill: Callable[[str], None]) -> None:
    """Replace split `name` of a run whose epochs are committed (`import --overwrite`).

    The new arrays are made beside the old ones as `name.new`, `fill(group_name)` writes them,
    and only then two renames swap them in and run.json is updated, so a failure leaves the old
    split as it was.

    Parameters
    ----------
    store : RunStore
        The run.
    name : str
        The split to replace.
    split : SplitData
        The new split's sample ids, labels, sources and metadata.
    fill : callable
        ``fill(group_name)`` writes the new predictions into the staging group.

    Raises
    ------
    InputError
        When the run has no split `name`.
    """
    if name not in store.splits:
        raise InputError(f"{store.path} has no split {name!r} to replace")
    root = store.path / ARRAYS
    staging, old = _staging(name)
    shutil.rmtree(root / staging, ignore_errors=True)  # left by a replacement killed while filling
    entry = _filled_split(store, staging, split, lambda: fill(staging))
    if split.meta:  # read joined by sample id, so the old arrays with the new metadata stay consistent
        store.write_metadata(name, split.ids, split.meta)
    with commit_lock(store.path):
        store.refresh()
        forget_split(store.path, name)  # embeddings, views and their scores of the old samples
        shutil.rmtree(root / old, ignore_errors=True)
        os.rename(root / name, root / old)  # a crash from here on is finished or undone by `recover_swaps`
        os.rename(root / staging, root / name)
        store.meta["splits"][name] = entry
        store.save_meta()
        shutil.rmtree(root / old, ignore_errors=True)
    store._group = open_group(store.path, "a")


def _staging(name: str) -> tuple[str, str]:
    """The names a split being replaced is staged under: a split name never starts with a dot."""
    return f".{name}.new", f".{name}.old"


def recover_swaps(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Finish or undo a `replace_split` that a crash cut short; returns run.json as it now is.

    Cut before the new arrays took the split's name: the old ones get it back. Cut after it but
    before run.json listed them: run.json's entry is made from the new arrays (their `WRITTEN`
    stamp tells them apart), so the run holds the new split whole. Either way the swap's staging
    groups go. A run that cannot be written (a read-only copy) is left as it is.

    Parameters
    ----------
    path : Path
        The run directory.
    meta : dict
        Its parsed run.json.

    Returns
    -------
    dict
        run.json after the repair (`meta` itself when there was nothing to do).
    """
    root = path / ARRAYS
    # `.X.old` exists only inside the swap, which runs under the commit lock: found outside it, the
    # swap's process died. (`.X.new` alone is a replacement still filling, or one killed while it
    # filled: the run is whole either way, and the next replacement of X clears it.)
    pending = [name for name in meta["splits"] if (root / _staging(name)[1]).exists()]
    if not pending:
        return meta
    try:
        with commit_lock(path):
            meta = json.loads((path / RUN_FILE).read_text(encoding="utf-8"))
            for name in pending:
                staging, old = _staging(name)
                if not (root / old).exists():  # another process finished it while this one waited
                    continue
                if not (root / name).exists():
                    os.rename(root / old, root / name)  # undo: the old split again
                elif (root / name).exists() and (root / old).exists():
                    group = json.loads((root / name / "zarr.json").read_text(encoding="utf-8"))
                    written = group.get("attributes", {}).get(WRITTEN)
                    if written is not None and written != meta["splits"][name].get("written"):  # finish: list the new split
                        labels = open_group(path, "r")[f"{name}/labels"][:]
                        meta["splits"][name] = {"n": int(len(labels)), "labelled": bool((labels >= 0).any()), "written": written}
                        write_json_atomic(path / RUN_FILE, meta)
                for stage in (staging, old):
                    shutil.rmtree(root / stage, ignore_errors=True)
    except OSError:  # not ours to write: the damage checks say what is wrong
        pass
    return meta


def _filled_split(store: RunStore, group: str, split: SplitData, fill: Callable[[], None]) -> dict[str, Any]:
    """Make the arrays of `group`, let `fill()` write them; on error remove them again."""
    entry = store._create_split(group, split)
    try:
        fill()
        store.layout.after_fill(store, group)  # the committed epochs of the new split, as every other
    except BaseException:
        with contextlib.suppress(Exception):
            del store._group[group]
        raise
    return entry
