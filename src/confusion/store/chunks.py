"""The chunk reader: blocks of an uncompressed, local Zarr v3 array read (or mapped) straight
from its chunk files, and rows written straight into them.

An uncompressed chunk (bytes codec, little endian) is the raw C-order array, padded to the full
chunk shape at the edges, so reading it is one `readinto` into the destination (~10x faster
than zarr's general decode path) and scoring can map it without a copy. Anything else
(compression, fsspec stores, other key encodings) is read and written through zarr itself.
"""

from __future__ import annotations

import mmap
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RunStoreError

__all__ = ["ChunkFileReader", "Mappings", "Rows", "chunk_missing", "missing_chunk", "write_rows"]


class ChunkFileReader:
    """Reads blocks of an uncompressed, local Zarr v3 array straight from its chunk files.

    An uncompressed chunk (bytes codec, little endian) is the raw C-order array, padded to the
    full chunk shape at the edges, so reading it is one `readinto` into the destination; this
    runs ~10x faster than zarr's general decode path. Anything else (compression, fsspec
    stores, other key encodings) is read through zarr itself.
    """

    def __init__(self, array, root: Path, committed: int | None = None):
        self.array = array
        self.root = root
        self.committed = committed  # epoch slots below this must have every chunk file
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.chunks = tuple(array.chunks)
        self.encode = array.metadata.encode_chunk_key

    @classmethod
    def wrap(cls, array, committed: int | None = None):
        from zarr.codecs import BytesCodec
        from zarr.storage import LocalStore

        metadata = array.metadata
        codecs = getattr(metadata, "codecs", ())
        plain = (
            isinstance(array.store, LocalStore)
            and len(codecs) == 1
            and isinstance(codecs[0], BytesCodec)
            and (codecs[0].endian is None or codecs[0].endian.value == sys.byteorder)
            and array.chunks[:2] == (1, 1)
            and array.chunks[3] == array.shape[3]
            and float(metadata.fill_value) == 0.0
        )
        return cls(array, Path(array.store.root) / array.path, committed) if plain else array

    def __getitem__(self, index):
        members, epochs, samples = index
        m_range = range(*members.indices(self.shape[0]))
        e_range = range(*epochs.indices(self.shape[1]))
        start, stop, _ = samples.indices(self.shape[2])
        out = np.empty((len(m_range), len(e_range), stop - start, self.shape[3]), dtype=self.dtype)
        return self.read_into(out, m_range.start, e_range.start, start)

    def map_slabs(self, members, epochs, start: int, stop: int) -> tuple[np.ndarray, Mappings]:
        """(members, epochs) addresses of samples [start, stop) (within one chunk) of each chosen
        member and epoch, straight in the mapped chunk files, and the mappings to close after use.

        Scoring from the page cache this way skips a copy of every value (bench/score.py).
        """
        per_chunk = self.chunks[2]
        chunk = start // per_chunk
        if (stop - 1) // per_chunk != chunk:
            raise ValueError("map_slabs reads one chunk of samples at a time")
        row_bytes = self.shape[3] * self.dtype.itemsize
        offset = (start - chunk * per_chunk) * row_bytes
        mappings = Mappings()
        addresses = np.empty((len(members), len(epochs)), dtype=np.uint64)
        try:
            for i, member in enumerate(members):
                for j, epoch in enumerate(epochs):
                    path = self.root / self.encode((int(member), int(epoch), chunk, 0))
                    try:
                        addresses[i, j] = mappings.address(path, offset, offset + (stop - start) * row_bytes)
                    except FileNotFoundError:
                        self._missing(path, int(epoch))
                        addresses[i, j] = mappings.zeros((stop - start) * row_bytes)
        except BaseException:
            mappings.close()
            raise
        return addresses, mappings

    def _missing(self, path: Path, epoch: int) -> None:
        """A chunk file that is not there: zarr skips chunks equal to the fill value, which only
        an epoch not yet committed can have (it reads as zeros); in a committed epoch it is damage."""
        if self.committed is not None and epoch < self.committed:
            raise chunk_missing(path) from None

    def read_into(self, out: np.ndarray, member0: int, epoch0: int, start: int) -> np.ndarray:
        """Fill `out` (members, epochs, samples, classes) from member0, epoch0, sample `start` on."""
        per_chunk = self.chunks[2]
        stop = start + out.shape[2]
        row_bytes = self.shape[3] * self.dtype.itemsize
        for i in range(out.shape[0]):
            for j in range(out.shape[1]):
                for chunk in range(start // per_chunk, (stop - 1) // per_chunk + 1):
                    first = max(start, chunk * per_chunk)
                    last = min(stop, (chunk + 1) * per_chunk)
                    target = out[i, j, first - start : last - start]
                    path = self.root / self.encode((member0 + i, epoch0 + j, chunk, 0))
                    try:
                        with open(path, "rb", buffering=0) as handle:
                            handle.seek((first - chunk * per_chunk) * row_bytes)
                            got = handle.readinto(memoryview(target).cast("B"))
                    except FileNotFoundError:
                        self._missing(path, epoch0 + j)
                        got = 0
                    if got != target.nbytes:
                        if got:
                            raise RunStoreError(f"chunk file {path} is truncated")
                        target[...] = 0
        return out


class Mappings:
    """Chunk files mapped read-only for one block of scoring; `close` unmaps them."""

    def __init__(self):
        self.maps: list[mmap.mmap] = []
        self.views: list[np.ndarray] = []

    def address(self, path: Path, offset: int, need: int) -> int:
        """Address of byte `offset` of the file at `path`, which must hold `need` bytes; an empty
        file reads as zeros, a missing one raises FileNotFoundError (see ChunkFileReader._missing)."""
        with open(path, "rb", buffering=0) as handle:
            size = os.fstat(handle.fileno()).st_size
            if not size:
                return self.zeros(need - offset)
            if size < need:
                raise RunStoreError(f"chunk file {path} is truncated")
            # Pages fault in inside the kernel's threads: measured faster on 2 cores than
            # MAP_POPULATE in the prefetching thread (4.7 vs 3.3 GB/s).
            self.maps.append(mmap.mmap(handle.fileno(), size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ))
        self.views.append(np.frombuffer(self.maps[-1], dtype=np.uint8))
        return self.views[-1].ctypes.data + offset

    def zeros(self, size: int) -> int:
        """Address of `size` zero bytes, kept until `close`."""
        self.views.append(np.zeros(size, dtype=np.uint8))
        return self.views[-1].ctypes.data

    def close(self) -> None:
        self.views.clear()  # the views hold exports of the maps, which must go first
        for mapped in self.maps:
            mapped.close()
        self.maps.clear()


def write_rows(array, member: int, slot: int, positions: np.ndarray, rows: np.ndarray) -> None:
    """Write float16 rows at sorted sample positions of (member, slot), one run of rows at a time."""
    if not len(positions):
        return
    target = ChunkFileReader.wrap(array)
    per_chunk = array.chunks[2]
    chunk_ids = positions // per_chunk
    breaks = np.flatnonzero((np.diff(positions) != 1) | (np.diff(chunk_ids) != 0)) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(positions)]])
    if not isinstance(target, ChunkFileReader):  # compressed or remote: through zarr
        for a, b in zip(starts, stops):
            array[member, slot, positions[a] : positions[b - 1] + 1, :] = rows[a:b]
        return
    row_bytes = array.shape[3] * 2
    chunk_bytes = per_chunk * row_bytes
    handle, open_chunk = None, -1
    try:
        for a, b in zip(starts, stops):
            chunk = int(chunk_ids[a])
            if chunk != open_chunk:
                if handle is not None:
                    os.close(handle)
                path = target.root / target.encode((member, slot, chunk, 0))
                path.parent.mkdir(parents=True, exist_ok=True)
                handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                if os.fstat(handle).st_size < chunk_bytes:  # zarr reads a chunk only at full size
                    os.ftruncate(handle, chunk_bytes)
                open_chunk = chunk
            os.pwrite(handle, rows[a:b].tobytes(), int(positions[a] - chunk * per_chunk) * row_bytes)
    finally:
        if handle is not None:
            os.close(handle)


class Rows:
    """Rows start:stop of a (members, epochs, samples, classes) reader, as an array of their own."""

    def __init__(self, reader, start: int, stop: int):
        self.reader, self.start = reader, start
        self.shape = (*reader.shape[:2], stop - start, reader.shape[3])
        self.dtype = reader.dtype
        self.chunks = None
        if hasattr(reader, "map_slabs") and start % reader.chunks[2] == 0:  # chunk files: mapped, as in the local scorer
            self.chunks = reader.chunks
            self.map_slabs = self._map_slabs

    def _map_slabs(self, members, epochs, first: int, last: int):
        return self.reader.map_slabs(members, epochs, self.start + first, self.start + last)

    def __getitem__(self, index):
        members, epochs, samples = index
        first, last, _ = samples.indices(self.shape[2])
        return self.reader[members, epochs, slice(self.start + first, self.start + last)]


def chunk_missing(path: Path) -> RunStoreError:
    """The one line that names a committed epoch's chunk file that is not there.

    Parameters
    ----------
    path : Path
        The chunk file.

    Returns
    -------
    RunStoreError
        To raise.
    """
    return RunStoreError(f"run store damaged: chunk file {path} of a committed epoch is missing")


def missing_chunk(array: Any, committed: int) -> Path | None:
    """The first chunk file of a committed epoch that a local store lacks, or None.

    zarr reads an absent chunk as its fill value, which no committed epoch can hold (no row of
    probabilities is all zeros, no entropy is NaN), so an absent one is damage. Arrays that are
    not in a local store are not listed (None).

    Parameters
    ----------
    array : zarr.Array
        An array with an "epoch" dimension whose chunks hold one epoch slot each.
    committed : int
        Committed epoch slots: the first `committed` along the epoch axis.

    Returns
    -------
    Path or None
        The missing file.
    """
    import itertools

    from zarr.storage import LocalStore

    names = tuple(array.metadata.dimension_names or ())
    if not isinstance(array.store, LocalStore) or "epoch" not in names:
        return None
    axis = names.index("epoch")
    grid = [-(-size // chunk) for size, chunk in zip(array.shape, array.chunks)]
    grid[axis] = min(grid[axis], committed)
    root = Path(array.store.root) / array.path
    for coordinates in itertools.product(*(range(g) for g in grid)):
        path = root / array.metadata.encode_chunk_key(coordinates)
        if not path.exists():
            return path
    return None
