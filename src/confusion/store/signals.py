"""What a run kept `--keep reduced` keeps instead of its embeddings and test-time views: the
scores they give, derived as each epoch is committed.

    RUN/signals/epoch-E/<split>.neighbours.npz   knn_disagreement, untrust (float64, (samples,))
                              and k: the neighbourhood scores of the members' embeddings at E
    RUN/signals/epoch-E/<split>.views.npz        view_disagreement, view_confusion (float64)

The epoch's record is reduced under the commit lock, before run.json lists the epoch; where
every member logged embeddings (of the split and of the train split) or views at that epoch,
these files are written then, from the embeddings and views the members committed and from the
epoch's own reduced record: the ensemble's arg-max at E is the predicted class the
neighbourhood scores compare with, and each member's arg-max at E its plain prediction for the
view scores. Once run.json lists the epoch, its embeddings and views are deleted (a call killed
before that is swept by the next commit). So they follow the commit rule: written before the
epoch is readable, never changed after. A split replaced later (`import --overwrite`) loses
what was derived from its old samples; a replaced train split, every split's neighbourhood scores.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import reduced
from .._files import write_npz_atomic
from ..errors import RunStoreError
from ..signalmath import REFERENCE, ensemble_neighbourhood, view_statistics
from .embeddings import EMBEDDINGS_DIR, VIEWS_DIR, embedding_epochs, read_embeddings

if TYPE_CHECKING:
    from .reads import RunReads

__all__ = ["KINDS", "SIGNALS_DIR", "derive", "drop_inputs", "forget_split", "read_signals", "signal_epochs"]

SIGNALS_DIR = "signals"
KINDS = {"neighbours": ("knn_disagreement", "untrust"), "views": ("view_disagreement", "view_confusion")}
SHARE_SCORES = ("knn_disagreement", "untrust", "view_disagreement")  # 0..1


def _path(run: Path, epoch: int, split: str, kind: str) -> Path:
    return Path(run) / SIGNALS_DIR / f"epoch-{epoch}" / f"{split}.{kind}.npz"


def derive(store: RunReads, slot: int, epoch: int, groups: list[str], k: int) -> None:
    """Write the neighbourhood and view scores of epoch slot `slot` (training epoch `epoch`) of
    every split in `groups` whose inputs every member committed.

    Parameters
    ----------
    store : RunReads
        The run, its commit lock held, the slot's reduced record written.
    slot : int
        The epoch slot being committed.
    epoch : int
        Its training epoch.
    groups : list of str
        The split groups being committed (a staging group has no inputs and is passed over).
    k : int
        Neighbours of the neighbourhood scores.
    """
    run, members = Path(store.path), store.n_members
    for split in groups:
        if split not in store.splits:
            continue
        n, where = store.n_samples(split), f"{store.path}: split {split!r}"
        group = store._group[split]
        if REFERENCE in store.splits and embedding_epochs(run, members, [epoch], sorted({split, REFERENCE})):
            labels = store.labels(REFERENCE)
            if np.count_nonzero(labels >= 0) > k:
                predicted = reduced.read(group, "ensemble_argmax", np.array([slot]), 0, n, where=where)[0].astype(np.int64)
                disagreement, untrust = ensemble_neighbourhood(
                    lambda name, member: read_embeddings(run, member, epoch, name, store.n_samples(name)), labels, split, predicted, members, k
                )
                write_npz_atomic(_path(run, epoch, split, "neighbours"), knn_disagreement=disagreement, untrust=untrust, k=np.int64(k))
        if embedding_epochs(run, members, [epoch], [split], VIEWS_DIR):
            plain = reduced.read(group, "member_argmax", np.array([slot]), 0, n, where=where)[:, 0].astype(np.int64)
            views = [read_embeddings(run, m, epoch, split, n, VIEWS_DIR).reshape(n, -1, store.n_classes) for m in range(members)]
            disagreement, confusion = view_statistics(views, plain)
            write_npz_atomic(_path(run, epoch, split, "views"), view_disagreement=disagreement, view_confusion=confusion)


def drop_inputs(run: Path, committed: list[int]) -> None:
    """Delete the embeddings and views of committed epochs (their scores are kept).

    Parameters
    ----------
    run : Path
        The run directory.
    committed : list of int
        The training epochs run.json lists.
    """
    done = {f"epoch-{epoch}" for epoch in committed}
    for folder in (EMBEDDINGS_DIR, VIEWS_DIR):
        for path in (Path(run) / folder).glob("member-*/epoch-*"):
            if path.name in done:
                shutil.rmtree(path, ignore_errors=True)


def forget_split(run: Path, split: str) -> None:
    """Delete everything kept beside split `split`'s predictions (it is being replaced): its
    embeddings, views and derived scores; where it is the train split, every split's
    neighbourhood scores too (the neighbours were its samples).

    Parameters
    ----------
    run : Path
        The run directory.
    split : str
        The split being replaced.
    """
    run = Path(run)
    for folder in (EMBEDDINGS_DIR, VIEWS_DIR):
        for epoch_dir in run.glob(f"{folder}/member-*/epoch-*"):
            (epoch_dir / f"{split}.npy").unlink(missing_ok=True)
    for epoch_dir in run.glob(f"{SIGNALS_DIR}/epoch-*"):
        for path in epoch_dir.iterdir():
            if path.name in (f"{split}.neighbours.npz", f"{split}.views.npz") or (split == REFERENCE and path.name.endswith(".neighbours.npz")):
                path.unlink(missing_ok=True)


def signal_epochs(run: Path, committed: list[int], split: str, kind: str) -> list[int]:
    """The committed epochs whose `kind` scores of `split` are kept.

    Parameters
    ----------
    run : Path
        The run directory.
    committed : list of int
        The run's committed epochs.
    split : str
        The split.
    kind : str
        "neighbours" or "views".

    Returns
    -------
    list of int
        In order.
    """
    return [epoch for epoch in committed if _path(run, epoch, split, kind).is_file()]


def read_signals(run: Path, epoch: int, split: str, kind: str, n_samples: int) -> dict[str, np.ndarray]:
    """The `kind` scores of `split` kept at `epoch`, checked.

    Parameters
    ----------
    run : Path
        The run directory.
    epoch : int
        A training epoch from `signal_epochs`.
    split : str
        The split.
    kind : str
        "neighbours" (with "k") or "views".
    n_samples : int
        The split's samples.

    Returns
    -------
    dict of str to ndarray
        Each score, float64 (samples,); "k" for the neighbourhood scores.

    Raises
    ------
    RunStoreError
        Where the file is damaged, or a score has the wrong shape or a value out of its range.
    """
    path = _path(run, epoch, split, kind)
    names = KINDS[kind] + (("k",) if kind == "neighbours" else ())
    try:
        with np.load(path, allow_pickle=False) as kept:
            found = {name: np.asarray(kept[name]) for name in names}
    except (OSError, KeyError, ValueError) as error:
        raise RunStoreError(
            f"{path} is damaged ({type(error).__name__}); the epoch's {kind} scores are lost (record them again with --keep raw)"
        ) from None
    for name in KINDS[kind]:
        values = found[name]
        high = 1.0 if name in SHARE_SCORES else np.inf
        if values.shape != (n_samples,) or values.dtype != np.float64 or not ((values >= 0) & (values <= high)).all():
            raise RunStoreError(f"{path} holds a damaged {name} ({values.dtype} {values.shape}, for {n_samples} samples)")
    return found
