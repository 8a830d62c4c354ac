"""Atomic file writes: a reader sees the old file or the new one, never half of either (the one
reader of torch files that come from outside is `torchfiles`)."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path, ".tmp")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a result file should read like any other
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _remove_orphans(path: Path, suffix: str) -> None:
    """Remove temporary siblings of `path` (files or folders ending in `suffix`) left by a process
    that was killed mid-write: their names carry the writer's pid; a live writer's are left alone."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*{suffix}"):
        pid = stale.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() and not stale.is_symlink() else stale.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_npz_atomic(path: str | os.PathLike, **arrays: Any) -> None:
    """numpy arrays as one uncompressed .npz at `path`, whole or not at all."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def write_table_atomic(frame, path: str | os.PathLike) -> None:
    """Write a pandas DataFrame as CSV or Parquet, chosen by the file's suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)


OWNER_MARKER = ".confusion-output.json"  # inside every folder a command writes whole: which command, from which run


def folder_owner(path: str | os.PathLike) -> str | None:
    """The command that wrote folder `path` (its OWNER_MARKER), or None when no command of this
    toolkit did (no marker, or one that is not ours)."""
    try:
        owner = json.loads((Path(path) / OWNER_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    command = owner.get("command") if isinstance(owner, dict) else None
    return command if isinstance(command, str) else None


def check_replaceable_folder(path: str | os.PathLike, command: str) -> None:
    """`path` may be made or replaced by `confusion COMMAND`'s output: absent, empty, or written by
    that command before (its OWNER_MARKER inside), never a user's folder that merely holds a
    file of the same name."""
    from .errors import InputError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and folder_owner(path) != command:
        raise InputError(f"{path} is not empty and was not written by `confusion {command}` (it holds no {OWNER_MARKER}); choose a new folder")


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, command: str, run: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yield an empty temporary sibling of folder `path`; when the block succeeds, the folder gets
    its OWNER_MARKER (`command`, `run`) and replaces `path` in two renames, so a reader sees the
    old folder or the new one, never half of one. A failure (or a kill: the next call cleans up)
    leaves `path` as it was. Only an earlier output of `command` is ever replaced."""
    path = Path(path)
    check_replaceable_folder(path, command)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path, ".partial")  # left by a killed earlier call
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".partial", dir=path.parent))
    os.chmod(staging, 0o777 & ~_umask())
    try:
        yield staging
        owner = {"command": command, "run": None if run is None else str(run), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_json_atomic(staging / OWNER_MARKER, owner)
        old = None
        if path.exists() or path.is_symlink():
            old = path.with_name(f".{path.name}.{os.getpid()}.old.partial")
            os.rename(path, old)
        os.rename(staging, path)
        if old is not None:  # a link (to an earlier output) goes, never what it points to
            old.unlink() if old.is_symlink() else shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
