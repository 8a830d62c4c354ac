"""What every reader of a run asks of it: its facts (members, classes, committed epochs,
splits), each split's ids, labels, sources and metadata, and the reads every analysis shares
(the probabilities, the last epoch, the per-epoch record). `RunStore` adds making, opening and
writing a run; scoring is `confusion.runscores`'s."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import reduced
from ..errors import InputError, RunStoreError
from .chunks import ChunkFileReader, chunk_missing, missing_chunk
from .embeddings import EMBEDDINGS_DIR, VIEWS_DIR, embedding_epochs, read_embeddings
from .format import ARRAYS, META_DIR, WRITTEN, strings
from .layouts import Layout, layout_of
from .signals import read_signals, signal_epochs

__all__ = ["RunReads"]


class RunReads:
    """The read side of a run directory (`RunStore` is one).

    Parameters
    ----------
    path : Path
        The run directory.
    meta : dict
        Its parsed run.json.
    group : zarr.Group
        Its opened predictions.zarr group.

    Attributes
    ----------
    layout : Layout
        What the run keeps of each prediction (`confusion.store.layouts`), chosen once here.
    """

    def __init__(self, path: Path, meta: dict[str, Any], group: Any):
        self.path = path
        self.meta = meta
        self._group = group
        self.layout: Layout = layout_of(meta)

    def metadata(self, split: str) -> Any:
        """The split's metadata in sample order, joined by sample id.

        Parameters
        ----------
        split : str
            The split.

        Returns
        -------
        pandas.DataFrame or None
            First column `sample`, then the metadata; samples it does not name get empty
            values. None when the split has no metadata.
        """
        import pandas as pd

        path = self.path / META_DIR / f"{split}.parquet"
        if split not in self.meta["splits"] or not path.is_file():
            return None
        try:
            table = pd.read_parquet(path)
        except (OSError, ValueError) as error:
            raise RunStoreError(f"{path} is unreadable ({str(error).splitlines()[0]}); delete it or import --meta again") from None
        if "sample" not in table.columns:
            raise RunStoreError(f"{path} lacks its 'sample' column; delete it or import --meta again")
        ids = self.sample_ids(split)
        table = table.drop_duplicates("sample").set_index(table["sample"].astype(str).rename(None)).drop(columns="sample")
        return table.reindex(ids).reset_index(names="sample")

    def metadata_columns(self, split: str, taken: Iterable[str]) -> dict[str, np.ndarray]:
        """The split's metadata columns in sample order, to put beside another table.

        Parameters
        ----------
        split : str
            The split.
        taken : iterable of str
            The other table's columns: a metadata column that clashes is named `meta_<name>`.

        Returns
        -------
        dict of str to ndarray
            The columns; empty when the split has none.
        """
        meta = self.metadata(split)
        if meta is None:
            return {}
        return {(column if column not in taken else f"meta_{column}"): meta[column].to_numpy() for column in meta.columns[1:]}

    @property
    def n_members(self) -> int:
        """M, the number of members."""
        return len(self.meta["members"])

    @property
    def n_classes(self) -> int:
        """C, the number of classes."""
        return int(self.meta["n_classes"])

    @property
    def classes(self) -> list[str]:
        """The class names, in index order."""
        return list(self.meta["classes"])

    @property
    def epoch_capacity(self) -> int:
        """Epoch slots the arrays hold now (at least the committed ones)."""
        return int(self.meta["epoch_capacity"])

    @property
    def recorded_epochs(self) -> list[int]:
        """Training epoch numbers (1-based) of the committed slots, in slot order.

        Returns
        -------
        list of int
            The committed epochs.
        """
        return list(self.meta["recorded_epochs"])

    @property
    def splits(self) -> list[str]:
        """The split names, in the order they were made."""
        return list(self.meta["splits"])

    @property
    def keep(self) -> str:
        """The layout's name.

        Returns
        -------
        str
            "raw" (every class probability), "reduced" (`confusion.reduced`'s record) or "topk"
            (top-k logs).
        """
        return self.layout.name

    def chosen_splits(self, names: Sequence[str] | None = None) -> list[str]:
        """The splits to work on, checked.

        Parameters
        ----------
        names : sequence of str, optional
            Split names; default every split.

        Returns
        -------
        list of str
            `names` in order without repeats (a split named twice is read once).

        Raises
        ------
        InputError
            Naming a split the run does not have.
        """
        chosen = list(dict.fromkeys(names)) if names else self.splits
        unknown = [name for name in chosen if name not in self.meta["splits"]]
        if unknown:
            raise InputError(f"{self.path} has no split {unknown[0]!r}; it has {', '.join(self.splits)}")
        return chosen

    def _split_group(self, split: str):
        self.chosen_splits([split])
        try:
            return self._group[split]
        except Exception as error:
            raise RunStoreError(f"{self.path}: {ARRAYS}/{split} is missing or damaged ({type(error).__name__})") from None

    def check_chunks(self) -> None:
        """Every chunk file of every committed epoch is there, in every array the layout reads.

        Raises
        ------
        RunStoreError
            Naming the first chunk file missing (what `confusion status` says of a damaged run).
        """
        for split in self.splits:
            group = self._split_group(split)
            for name in self.layout.committed_arrays:
                missing = missing_chunk(group[name], len(self.recorded_epochs))
                if missing is not None:
                    raise chunk_missing(missing)

    def split_written(self, split: str) -> Any:
        """When the split's arrays were made: their group's stamp, else run.json's (older runs).

        Parameters
        ----------
        split : str
            The split.

        Returns
        -------
        int or None
            Nanoseconds since the epoch, or None where neither says.
        """
        return self._split_group(split).attrs.get(WRITTEN, self.meta["splits"].get(split, {}).get("written"))

    def probs(self, split: str) -> Any:
        """The split's probabilities as stored.

        Parameters
        ----------
        split : str
            The split.

        Returns
        -------
        zarr.Array
            (members, epoch slots, samples, classes) float16; only committed slots are valid.
        """
        return self._split_group(split)["probs"]

    def probs_reader(self, split: str) -> Any:
        """What scoring reads of the split's probabilities.

        Parameters
        ----------
        split : str
            The split.

        Returns
        -------
        ChunkFileReader or zarr.Array
            The chunk files themselves when the store is local and uncompressed, else the zarr
            array. A chunk file of a committed epoch that is missing is reported as damage
            (zarr itself would read it as zeros).

        Raises
        ------
        InputError
            On a run whose layout does not keep every probability (reduced, top-k).
        """
        self.layout.require_probs(self.path, "reading class probabilities")
        return ChunkFileReader.wrap(self.probs(split), committed=len(self.recorded_epochs))

    def _read(self, split: str, name: str, read: Callable = lambda array: array[:]):
        """A small array of a split (labels, ids, sources), or one line naming the damaged part."""
        group = self._split_group(split)
        try:
            return read(group[name])
        except Exception as error:
            raise RunStoreError(f"{self.path}: {ARRAYS}/{split}/{name} is damaged ({type(error).__name__}: {str(error)[:80]})") from None

    def labels(self, split: str) -> np.ndarray:
        """The split's labels.

        Parameters
        ----------
        split : str
            The split.

        Returns
        -------
        ndarray of int64, shape (samples,)
            Class indices, -1 where unknown.
        """
        labels = np.asarray(self._read(split, "labels"), dtype=np.int64)
        if self.meta["splits"][split].get("labelled") and (labels < 0).all():  # zarr's fill value: the chunk is gone
            raise RunStoreError(f"{self.path}: the labels of split {split!r} are missing ({ARRAYS}/{split}/labels is damaged)")
        return labels

    def sample_ids(self, split: str) -> np.ndarray:
        """The split's sample ids.

        Parameters
        ----------
        split : str
            The split.

        Returns
        -------
        ndarray of str, shape (samples,)
            Stable sample ids, in sample order.
        """
        ids = self._read(split, "ids", strings)
        if len(ids) != self.meta["splits"][split]["n"] or (ids == "").any():  # a lost chunk reads as blanks
            raise RunStoreError(f"{self.path}: the sample ids of split {split!r} are missing ({ARRAYS}/{split}/ids is damaged)")
        return ids

    def final_probs(self, split: str) -> np.ndarray:
        """Every member's probabilities at the last committed epoch.

        The one place "the last epoch's predictions" are read (hard sets, evaluation, reports).

        Parameters
        ----------
        split : str
            The split.

        Returns
        -------
        ndarray of float32, shape (members, samples, classes)
            The probabilities.
        """
        if not self.recorded_epochs:
            raise RunStoreError(f"{self.path} has no committed epoch yet; nothing to read")
        self.layout.require_probs(self.path, "the final class probabilities")
        slot = len(self.recorded_epochs) - 1
        final = np.asarray(self.probs_reader(split)[:, slot : slot + 1, :][:, 0], dtype=np.float32)
        empty = np.flatnonzero((final.sum(axis=2) == 0).any(axis=0))
        if len(empty):  # no probability row sums to 0: the data of these samples is lost
            raise RunStoreError(
                f"{self.path}: split {split!r} has no predictions for {len(empty)} samples at its last epoch (its chunk files are damaged)"
            )
        return final

    def final_predictions(self, split: str) -> reduced.FinalPredictions:
        """What the analyses use of the last committed epoch, from whatever the layout keeps.

        Parameters
        ----------
        split : str
            The split.

        Returns
        -------
        FinalPredictions
            Each member's arg-max, entropy (bits) and top probability; the ensemble's arg-max.
        """
        if not self.recorded_epochs:
            raise RunStoreError(f"{self.path} has no committed epoch yet; nothing to read")
        return self.layout.final_predictions(self, split)

    def record_blocks(self, split: str, block_bytes: int, fields: Sequence[str] | None = None) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
        """The reduced record of every committed epoch, block by block of samples.

        Computed from the raw probabilities on a raw run, read on a reduced one: analyses
        written against the record give the same numbers for both.

        Parameters
        ----------
        split : str
            The split.
        block_bytes : int
            About how much memory one block takes.
        fields : sequence of str, optional
            The fields wanted (`confusion.reduced.FIELDS`); default every field but the entropies.

        Returns
        -------
        iterator of (int, int, dict)
            (start, stop, {field: values}) with member fields (members, epochs, samples) and
            ensemble fields (epochs, samples).
        """
        return self.layout.record_blocks(self, split, block_bytes, fields)

    def embedding_epochs(self, splits: Sequence[str]) -> list[int]:
        """The committed epochs whose embeddings every member kept for every split in `splits`.

        Parameters
        ----------
        splits : sequence of str
            Splits of the run.

        Returns
        -------
        list of int
            Training epochs, in order; empty where none was recorded.
        """
        return self._kept_epochs(splits, EMBEDDINGS_DIR)

    def embeddings(self, split: str, member: int, epoch: int) -> np.ndarray:
        """One member's embeddings of `split` at a committed `epoch` (see `embedding_epochs`).

        Parameters
        ----------
        split : str
            The split.
        member : int
            The member.
        epoch : int
            A training epoch from `embedding_epochs`.

        Returns
        -------
        ndarray of float16, shape (samples, dims)
            Memory-mapped, read-only: the member's penultimate layer on the train split's
            principal axes (`confusion.store.embeddings`).
        """
        return self._kept(split, member, epoch, EMBEDDINGS_DIR, "embeddings")

    def view_epochs(self, splits: Sequence[str]) -> list[int]:
        """The committed epochs whose test-time views every member kept for every split in `splits`.

        Parameters
        ----------
        splits : sequence of str
            Splits of the run.

        Returns
        -------
        list of int
            Training epochs, in order; empty where none was recorded.
        """
        return self._kept_epochs(splits, VIEWS_DIR)

    def views(self, split: str, member: int, epoch: int) -> np.ndarray:
        """One member's class probabilities on the test-time views of `split` at a committed `epoch`.

        Parameters
        ----------
        split : str
            The split.
        member : int
            The member.
        epoch : int
            A training epoch from `view_epochs`.

        Returns
        -------
        ndarray of float16, shape (samples, views, classes)
            Memory-mapped, read-only.
        """
        rows = self._kept(split, member, epoch, VIEWS_DIR, "test-time views")
        if rows.shape[1] % self.n_classes:
            raise RunStoreError(f"{self.path}: the views of split {split!r} are {rows.shape[1]} wide, not a multiple of {self.n_classes} classes")
        return rows.reshape(rows.shape[0], -1, self.n_classes)

    def signal_epochs(self, split: str, kind: str) -> list[int]:
        """The committed epochs whose neighbourhood or view scores of `split` a run kept
        `--keep reduced` holds (it keeps them instead of the embeddings and views).

        Parameters
        ----------
        split : str
            The split.
        kind : str
            "neighbours" or "views".

        Returns
        -------
        list of int
            Training epochs, in order.
        """
        self._split_group(split)
        return signal_epochs(self.path, self.recorded_epochs, split, kind)

    def signals(self, split: str, kind: str, epoch: int) -> dict[str, np.ndarray]:
        """The neighbourhood or view scores of `split` kept at a committed `epoch`.

        Parameters
        ----------
        split : str
            The split.
        kind : str
            "neighbours" (knn_disagreement, untrust and k) or "views" (view_disagreement,
            view_confusion).
        epoch : int
            A training epoch from `signal_epochs`.

        Returns
        -------
        dict of str to ndarray
            Each score, float64 (samples,).
        """
        if epoch not in self.signal_epochs(split, kind):
            raise InputError(f"{self.path} holds no {kind} scores of split {split!r} at epoch {epoch}")
        return read_signals(self.path, epoch, split, kind, self.n_samples(split))

    def _kept_epochs(self, splits: Sequence[str], folder: str) -> list[int]:
        for split in splits:
            self._split_group(split)
        return embedding_epochs(self.path, self.n_members, self.recorded_epochs, list(splits), folder)

    def _kept(self, split: str, member: int, epoch: int, folder: str, what: str) -> np.ndarray:
        if epoch not in self._kept_epochs([split], folder):
            raise InputError(f"{self.path} holds no {what} of split {split!r} at epoch {epoch}")
        return read_embeddings(self.path, member, epoch, split, self.n_samples(split), folder)

    def sources(self, split: str) -> np.ndarray | None:
        """The source file of each sample of the split, where the run keeps them.

        Parameters
        ----------
        split : str
            The split.

        Returns
        -------
        ndarray of str or None
            (samples,), or None.
        """
        return self._read(split, "sources", strings) if "sources" in self._split_group(split) else None

    def n_samples(self, split: str) -> int:
        """How many samples the split has.

        Parameters
        ----------
        split : str
            The split.

        Returns
        -------
        int
            Its sample count.
        """
        return int(self.meta["splits"][split]["n"]) if split in self.meta["splits"] else len(self.sample_ids(split))
