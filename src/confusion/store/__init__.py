"""The run store: one directory per run, the contract between training and everything after.

- `format`: every path the store writes, its constants, and the damage and shape checks;
- `run`: `RunStore` (create, open, run.json, adding and replacing splits, the members' epochs);
- `reads`: `RunReads`, what every reader asks of a run (facts, ids, labels, metadata, the last
  epoch, the per-epoch record), which `RunStore` extends;
- `commit`: `MemberWriter` and the commit rule, capacity;
- `splits`: adding and replacing splits after the epochs are committed;
- `embeddings`: the members' embeddings and test-time views, committed with their epoch;
- `signals`: the scores a reduced run keeps of them instead;
- `layouts`: what a run keeps of each prediction, one class per layout (`Raw`, `Reduced`, `TopK`);
- `chunks`: the chunk-file reader and writer;
- `locks`: the run's file locks.

Scoring a run is `confusion.runscores`'s job: it reads the store.
"""

from .commit import MemberWriter
from .format import (
    ARRAYS,
    CHUNK_BYTES,
    COMMIT_LOCK,
    EMBEDDINGS,
    FORMAT,
    LOCK_FILE,
    MEMBERS_DIR,
    META_DIR,
    RUN_FILE,
    SplitData,
    check_class_names,
    check_usable_directory,
    chunk_samples,
    is_run_store,
    software_versions,
)
from .locks import hold_lock
from .reads import RunReads
from .run import RunStore

__all__ = [
    "ARRAYS",
    "CHUNK_BYTES",
    "COMMIT_LOCK",
    "EMBEDDINGS",
    "FORMAT",
    "LOCK_FILE",
    "MEMBERS_DIR",
    "META_DIR",
    "RUN_FILE",
    "MemberWriter",
    "RunReads",
    "RunStore",
    "SplitData",
    "check_class_names",
    "check_usable_directory",
    "chunk_samples",
    "hold_lock",
    "is_run_store",
    "software_versions",
]
