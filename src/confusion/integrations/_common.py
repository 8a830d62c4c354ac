"""What the framework callbacks share: naming a split's labels, creating or joining the run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
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


EMBEDDING_CHOICES = ("last", "all", "none")


def check_embeddings(choice: str) -> str:
    if choice not in EMBEDDING_CHOICES:
        raise InputError(f"embeddings must be 'last', 'all' or 'none', got {choice!r}")
    return choice


def check_view_names(views: Sequence[str]) -> tuple[str, ...]:
    from ..engine import VIEWS

    names = (views,) if isinstance(views, str) else tuple(views)
    if any(v not in VIEWS for v in names) or len(set(names)) != len(names):
        raise InputError(f"views must name each of {', '.join(VIEWS)} at most once, got {views!r}")
    return names


def embeds_at(choice: str, epoch: int, last: bool) -> bool:
    """Whether embeddings are recorded after `epoch` (`last`: the framework says training ends now)."""
    return choice == "all" or (choice == "last" and last)


@contextlib.contextmanager
def head_inputs(module: Any, layer: Any = None, wanted: bool = True) -> Iterator[list[np.ndarray]]:
    """Collect, batch by batch, the inputs of `module`'s classifier head (`layer`, default its
    last `nn.Linear`) while the block runs: the member's embeddings. Nothing when not `wanted`."""
    captured: list[np.ndarray] = []
    if not wanted:
        yield captured
        return
    from ..models import head_layer

    head = layer if layer is not None else head_layer(module)
    if head is None:
        raise InputError(
            f"{type(module).__name__} has no nn.Linear classifier head to take embeddings from; pass embedding_layer= or embeddings='none'"
        )
    handle = head.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].detach().float().flatten(1).cpu().numpy()))
    try:
        yield captured
    finally:
        handle.remove()
