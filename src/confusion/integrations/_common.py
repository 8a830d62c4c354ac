"""What the framework callbacks share: naming a split's labels, creating or joining the run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..recorder import Recorder
from ..store import is_run_store


def open_or_create(
    path: str | Path,
    *,
    members: int | None,
    n_classes: int,
    labels: Mapping[str, np.ndarray],
    classes: Sequence[str] | None,
    info: Mapping[str, Any],
    keep: str = "raw",
) -> Recorder:
    """The run at `path`, created on first use from what the first epoch showed."""
    if is_run_store(path):
        return Recorder.open(path)
    if members is None:
        raise InputError(f"{path} does not exist yet: pass members=M (the ensemble size) so the callback can create it")
    return Recorder.create(path, n_classes=n_classes, members=members, splits=dict(labels), classes=classes, exist_ok=True, info=info, keep=keep)


def check_member(member: int, members: int | None) -> None:
    if isinstance(member, bool) or not isinstance(member, int) or member < 0:
        raise InputError(f"member must be a non-negative integer, got {member!r}")
    if members is not None and (isinstance(members, bool) or not isinstance(members, int) or not 0 <= member < members):
        raise InputError(f"member must be in 0..members-1, got member={member!r}, members={members!r}")
