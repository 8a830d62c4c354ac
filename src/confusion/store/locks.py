"""The run store's locks: POSIX advisory locks (flock) on files inside the run directory.

They hold between processes on one machine and on network filesystems whose clients implement
flock across machines (NFSv4, Lustre and GPFS with locking enabled); on a filesystem without
working locks, run at most one writer per member and let them end epochs at different moments.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from ..errors import RunLockedError
from .format import COMMIT_LOCK, LOCK_FILE

__all__ = ["commit_lock", "hold_lock", "holder"]


@contextlib.contextmanager
def hold_lock(path: str | os.PathLike, name: str = LOCK_FILE) -> Iterator[None]:
    """Hold lock file `name` of a run directory, or raise RunLockedError naming the holder.

    Parameters
    ----------
    path : str or PathLike
        The run directory (made if absent).
    name : str
        The lock file: ``.lock`` for a command that owns the whole run, ``.member-M.lock`` for
        the writer of member M.

    Raises
    ------
    RunLockedError
        When another process holds it; the message names that process.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    handle = open(path / name, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            what = path if name == LOCK_FILE else f"{path} ({name.strip('.').removesuffix('.lock')})"
            raise RunLockedError(f"{what} is in use by {holder}; wait for it to finish or stop it, then run again") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        yield
    finally:
        handle.close()


@contextlib.contextmanager
def commit_lock(path: Path) -> Iterator[None]:
    """Wait for, then hold, the run's commit lock (short critical sections: create, grow, commit).

    Parameters
    ----------
    path : Path
        The run directory.

    Yields
    ------
    None
        While the lock is held.
    """
    with open(path / COMMIT_LOCK, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


def holder(path: Path, name: str) -> str | None:
    """Who holds a lock file of a run now.

    Parameters
    ----------
    path : Path
        The run directory.
    name : str
        The lock file.

    Returns
    -------
    str or None
        "process 12 on node3", or None when nobody does.
    """
    try:
        handle = open(path / name, encoding="utf-8")
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "another process"
        return None
