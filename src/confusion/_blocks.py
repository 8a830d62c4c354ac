"""Reading (members, epochs, samples, classes) probabilities block by block of samples, for the
scorer (`confusion.scores.confusion_scores`): which members and epochs, how many samples a block
holds, and the reader that hands blocks (or mapped chunk files) to the kernel."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["BLOCK_BYTES", "WHOLE_BLOCK", "Reader", "block_samples", "indices", "sample_chunk"]

# Bytes of float64 working memory per block in the numpy path; small enough to stay near
# the last-level cache, large enough that per-block overhead vanishes.
BLOCK_BYTES = 32 * 2**20
WHOLE_BLOCK = 2**16


def indices(which, size: int, axis_name: str) -> np.ndarray:
    if which is None:
        return np.arange(size)
    if isinstance(which, slice):
        index = np.arange(size)[which]
    else:
        index = np.asarray(list(which) if not isinstance(which, np.ndarray) else which)
        if index.dtype.kind not in "iu":
            raise InputError(f"{axis_name} must be integer indices, got {index.dtype}")
        index = index.astype(np.intp).ravel()
        if ((index < -size) | (index >= size)).any():
            raise InputError(f"{axis_name} index out of range for {size} {axis_name}: {index.tolist()}")
        index = np.where(index < 0, index + size, index)
        if len(np.unique(index)) != len(index):
            raise InputError(f"{axis_name} indices repeat: {index.tolist()}")
    if len(index) == 0:
        raise InputError(f"no {axis_name} selected")
    return index


class Reader:
    """Reads (members, epochs, sample-block, classes) blocks from an ndarray, memmap or zarr array.

    Only the bounding box of the chosen members and epochs is read; which of them enter the
    score is passed on as indices, so choosing a subset never copies the whole array. A
    C-contiguous 4-D numpy array is handed over whole with a sample range (no copy at all);
    a source with `map_slabs` (the run store's chunk files) is mapped, not copied, one chunk
    of samples at a time.
    """

    def __init__(self, array, members: np.ndarray, epochs: np.ndarray):
        self.array = array
        self.whole = isinstance(array, np.ndarray) and array.ndim == 4 and array.flags.c_contiguous
        self.mapped = hasattr(array, "map_slabs")
        if self.whole:
            self.m0 = self.e0 = 0
            self.m1, self.e1 = array.shape[0], array.shape[1]
        else:
            self.m0, self.m1 = int(members.min()), int(members.max()) + 1
            self.e0, self.e1 = int(epochs.min()), int(epochs.max()) + 1
        self.members = members - self.m0
        self.epochs = epochs - self.e0
        self.buffers: list[np.ndarray | None] = [None, None]
        self.turn = 1

    def __call__(self, start: int, stop: int, fresh: bool = False) -> tuple[np.ndarray, int, int]:
        """(C-contiguous block, first sample, last sample + 1) in the block's own sample axis.

        A source with `read_into` (the run store's chunk-file reader) fills one of two
        buffers in turn, so a block stays valid while the next one is read, and fresh
        memory is not page-faulted in for every block; `fresh` reads into new memory.
        """
        if self.whole:
            return self.array, start, stop
        if len(self.array.shape) == 2:
            block = np.asarray(self.array[start:stop])[None, None]
        elif hasattr(self.array, "read_into"):
            shape = (self.m1 - self.m0, self.e1 - self.e0, stop - start, self.array.shape[3])
            if fresh:
                return self.array.read_into(np.empty(shape, dtype=self.array.dtype), self.m0, self.e0, start), 0, stop - start
            self.turn = 1 - self.turn
            buffer = self.buffers[self.turn]
            if buffer is None or buffer.shape != shape:
                buffer = self.buffers[self.turn] = np.empty(shape, dtype=self.array.dtype)
            block = self.array.read_into(buffer, self.m0, self.e0, start)
        else:
            block = np.asarray(self.array[self.m0 : self.m1, self.e0 : self.e1, start:stop])
        return np.ascontiguousarray(block), 0, stop - start

    def slabs(self, start: int, stop: int) -> tuple[np.ndarray, Any]:
        """(addresses of the chosen (member, epoch) slabs of samples [start, stop), the object
        that keeps their memory alive) for the numba kernel; `release` the latter after it."""
        from ._kernels import slab_addresses

        if self.mapped:
            return self.array.map_slabs(self.m0 + self.members, self.e0 + self.epochs, start, stop)
        block, first, _ = self(start, stop)
        return slab_addresses(block, self.members, self.epochs, first), block

    @staticmethod
    def release(keep: Any) -> None:
        if hasattr(keep, "close"):
            keep.close()


def sample_chunk(array) -> int | None:
    chunks = getattr(array, "chunks", None)
    if chunks and len(chunks) == len(array.shape):
        return int(chunks[-2])
    return None


def block_samples(reader: Reader, n_classes: int, dtype: np.dtype, engine: str) -> int:
    """Samples per block. The kernel maps a store one chunk at a time and takes an array in
    memory as it is, in blocks of WHOLE_BLOCK samples (only the per-epoch outputs take
    memory; larger blocks keep both cores busy); a copied block takes BLOCK_BYTES (float64
    in the numpy path), whole chunks only, so a store is read once, chunk by chunk."""
    chunk = sample_chunk(reader.array)
    if engine == "numba" and reader.mapped and chunk:
        return chunk
    if engine == "numba" and reader.whole:
        return WHOLE_BLOCK
    itemsize = dtype.itemsize if engine == "numba" else max(dtype.itemsize, 8)
    per_sample = max(1, (reader.m1 - reader.m0) * (reader.e1 - reader.e0) * n_classes * itemsize)
    block = max(1, BLOCK_BYTES // per_sample)
    if chunk:
        block = max(chunk, (block // chunk) * chunk)
    return block
