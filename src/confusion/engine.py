"""The one torch training engine: data on the device, a member, one epoch, predictions,
checkpoints, and the processes that run members.

    data = DeviceData(dataset, device)                  # uint8 splits on the device
    member = make_member(0, config, image_shape, C, n_train, device)
    fit_epoch(member, data, epoch=1, batch_size=128, augment=True, precision="fp32",
              sampler=shuffled, loss=mean_cross_entropy)   # samplers and losses plug in
    probs = predict(member.model, data, "val", 256, "fp32")

The trainer (`training`) coordinates members through it; mitigation is a sampler
(`upsampled`, `group_balanced`) and a loss (`mitigation.GroupDRO`) on the same loop; the zoo's
linear probe and `evaluate` reuse `fit_epoch` and `predict`. `run_processes` is the one
process coordinator: one spawned, single-purpose process per group of jobs, dying with its
parent. Everything here needs PyTorch (the `train` extra); it is imported lazily.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import queue as queue_module
import sys
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._files import atomic_path
from ._runtime import cpu_has_bf16, die_with_parent, worker_environment
from .datasets import normalization_stats
from .errors import ConfusionError, RunStoreError, WorkerDiedError
from .torchfiles import load_weights_only

__all__ = [
    "CHECKPOINTS",
    "DeviceData",
    "FeatureData",
    "Member",
    "batches",
    "bootstrap",
    "checkpoint_path",
    "feature_columns",
    "fit_epoch",
    "group_balanced",
    "input_data",
    "load_checkpoint",
    "make_member",
    "mean_cross_entropy",
    "member_arch",
    "member_model",
    "predict",
    "resolve_precision",
    "restore",
    "run_processes",
    "save_checkpoint",
    "shift_and_flip",
    "shuffled",
    "steps_per_epoch",
    "upsampled",
    "upsampled_indices",
    "view_of",
    "VIEWS",
]

CHECKPOINTS = "checkpoints"


# ----------------------------------------------------------------------------- data
class DeviceData:
    """A dataset's splits as uint8 tensors on the device, normalised per batch."""

    def __init__(self, dataset, device, normalization: tuple[list[float], list[float]] | None = None):
        import torch

        self.device = device
        self.images = {name: torch.from_numpy(split.images).to(device) for name, split in dataset.splits.items()}
        self.labels = {name: torch.from_numpy(split.labels).to(device) for name, split in dataset.splits.items()}
        # Per-channel mean and std of the training pixels, in [0, 1] units (or the model's own).
        mean, std = normalization or normalization_stats(dataset.splits["train"].images)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.flip = dataset.flip_preserves_label
        self.augmentable = True

    def n(self, split: str) -> int:
        return int(self.images[split].shape[0])

    def batch(self, split: str, index, channels_last: bool):
        import torch

        x = self.images[split][index].float().div_(255.0).sub_(self.mean).div_(self.std)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class FeatureData:
    """Float feature vectors (samples, features) per split, with the same interface as DeviceData;
    standardised by `normalization` (per-feature mean and std) when given."""

    def __init__(self, features: dict[str, np.ndarray], labels: dict[str, np.ndarray], device, normalization=None):
        import torch

        self.device = device
        if normalization is not None:
            mean, std = (np.asarray(v, dtype=np.float32) for v in normalization)
            features = {name: (f - mean) / std for name, f in features.items()}
        self.images = {name: torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32)).to(device) for name, f in features.items()}
        self.labels = {name: torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device) for name, y in labels.items()}
        self.flip = False
        self.augmentable = False

    def n(self, split: str) -> int:
        return int(self.images[split].shape[0])

    def batch(self, split: str, index, channels_last: bool):
        return self.images[split][index]


def input_data(dataset, device, normalization: tuple[list[float], list[float]] | None = None):
    """What a model reads: DeviceData for images, standardised FeatureData for feature and text data."""
    if dataset.kind == "images":
        return DeviceData(dataset, device, normalization)
    normalization = normalization or normalization_stats(dataset.splits["train"].images)
    return FeatureData(
        {name: split.images for name, split in dataset.splits.items()},
        {name: split.labels for name, split in dataset.splits.items()},
        device,
        normalization,
    )


def shift_and_flip(x, generator, flip: bool, pad: int = 2):
    """Random translation by up to `pad` pixels (zero fill) and, if `flip`, horizontal flips."""
    import torch

    batch, channels, height, width = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (batch,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (batch,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(height, device=x.device)[None]).view(batch, 1, height, 1)
    cols = (dx[:, None] + torch.arange(width, device=x.device)[None]).view(batch, 1, 1, width)
    if flip:
        mirrored = torch.rand(batch, generator=generator).to(x.device) < 0.5
        cols = torch.where(mirrored.view(batch, 1, 1, 1), 2 * dx.view(batch, 1, 1, 1) + width - 1 - cols, cols)
    samples = torch.arange(batch, device=x.device).view(batch, 1, 1, 1)
    planes = torch.arange(channels, device=x.device).view(1, channels, 1, 1)
    return padded[samples, planes, rows, cols]


# ----------------------------------------------------------------------------- a member
@dataclass
class Member:
    """One ensemble member's model and training state."""

    index: int
    seed: int
    model: Any
    optimizer: Any
    scheduler: Any
    epoch: int = 0  # last finished epoch
    history: list[dict] = field(default_factory=list)


def resolve_precision(config) -> str:
    """fp32 or bf16: `config.precision`, or with "auto" bf16 only where the hardware computes in it."""
    import torch

    if config.precision != "auto":
        return config.precision
    if config.device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return max(1, math.ceil(n_train / batch_size))


def member_arch(arch: str, index: int) -> str:
    """Member `index`'s architecture: `arch`, or its index-th entry when it lists one per member."""
    names = [a.strip() for a in arch.split(",")]
    return names[index] if len(names) > 1 else names[0]


def feature_columns(width: int, fraction: float, seed: int) -> np.ndarray:
    """The random subspace of member `seed`: round(fraction * width) feature columns, sorted."""
    keep = max(1, int(round(fraction * width)))
    return np.sort(np.random.default_rng([seed, 7919]).choice(width, size=keep, replace=False))


def member_model(config, index: int, input_shape, n_classes: int):
    """Member `index`'s untrained model: its architecture, on its feature subset if any.

    The same function rebuilds it for evaluation, so checkpoints load into the same shape."""
    import torch

    from .models import Columns, build_for_input

    arch = member_arch(config.arch, index)
    fraction = getattr(config, "feature_subset", None)
    if fraction and len(input_shape) == 1:
        columns = feature_columns(int(input_shape[0]), fraction, config.seed + index)
        return Columns(torch.from_numpy(columns), build_for_input(arch, (len(columns),), n_classes))
    return build_for_input(arch, tuple(input_shape), n_classes)


def bootstrap(n: int, seed: int):
    """Bagging: a member trains on its own bootstrap resample of the training split (n draws
    with replacement, fixed by its seed), visited in a fresh order every epoch."""
    import torch

    pool = torch.from_numpy(np.random.default_rng([seed, 104729]).integers(0, n, size=n))
    return lambda generator: pool[torch.randperm(n, generator=generator)]


def make_member(index: int, config, input_shape, n_classes: int, n_train: int, device, model=None) -> Member:
    """Member `index` (seed `config.seed + index`): its model (built by `member_model` unless
    given), optimiser and per-step schedule."""
    import torch

    from .models import is_convolutional

    seed = config.seed + index
    torch.manual_seed(seed)
    if model is None:
        model = member_model(config, index, input_shape, n_classes)
    model = model.to(device)
    if is_convolutional(model):
        model = model.to(memory_format=torch.channels_last)
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    total_steps = config.epochs * steps_per_epoch(n_train, config.batch_size)
    if config.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=config.lr * 0.01)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return Member(index, seed, model, optimizer, scheduler)


# ----------------------------------------------------------------------------- one epoch
def shuffled(n: int):
    """The default sampler: every training sample once per epoch, in a seeded order."""
    import torch

    return lambda generator: torch.randperm(n, generator=generator)


def upsampled_indices(bands: np.ndarray, factor: int) -> np.ndarray:
    """Sample positions for one epoch: high-band samples `factor` times, the others once."""
    high = bands == bands.max() if bands.max() > 0 else np.zeros(len(bands), bool)
    return np.concatenate([np.arange(len(bands)), np.repeat(np.flatnonzero(high), factor - 1)])


def upsampled(bands: np.ndarray, factor: int):
    """Upsampling (JTT-style): every sample of the highest band `factor` times per epoch."""
    import torch

    pool = torch.from_numpy(upsampled_indices(bands, factor))
    return lambda generator: pool[torch.randperm(len(pool), generator=generator)]


def group_balanced(groups: np.ndarray, n_groups: int):
    """Batches drawn with replacement so that every group is equally likely."""
    import torch

    groups = torch.as_tensor(groups, dtype=torch.int64)
    weights = (1.0 / torch.bincount(groups, minlength=n_groups).double().clamp_min(1))[groups]
    return lambda generator: torch.multinomial(weights, len(groups), replacement=True, generator=generator)


def mean_cross_entropy(logits, labels, index):
    """The default loss: mean cross-entropy over the batch."""
    from torch.nn import functional as F

    return F.cross_entropy(logits, labels)


def batches(order, batch_size: int):
    """Split a permutation into nearly equal batches (no batch of 1, which BatchNorm rejects)."""
    count = max(1, math.ceil(len(order) / batch_size))
    bounds = np.linspace(0, len(order), count + 1).round().astype(int)
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def fit_epoch(
    member: Member,
    data,
    *,
    epoch: int,
    batch_size: int,
    augment: bool,
    precision: str,
    sampler: Callable | None = None,
    loss: Callable = mean_cross_entropy,
    record=None,
    report: Callable | None = None,
) -> tuple[float, float]:
    """One pass over the training split in a seeded order, as training epoch `epoch` (1-based).
    Returns (mean loss, accuracy); the caller, which owns the epoch count, sets `member.epoch`.

    sampler(generator) -> the epoch's sample positions (default: `shuffled`); loss(logits,
    labels, index) -> scalar. The generator is seeded by (member seed, epoch), so a resumed
    run draws the same order and augmentation. record: optional (samples, classes) float32
    tensor that receives the softmax of the training forward pass (--record-train in-loop).
    """
    import torch

    from .models import is_convolutional

    generator = torch.Generator().manual_seed(member.seed * 1_000_003 + epoch)
    order = (sampler or shuffled(data.n("train")))(generator)
    channels_last = is_convolutional(member.model)
    autocast = torch.autocast(data.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    member.model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    parts = batches(order, batch_size)
    for step, index in enumerate(parts):
        index_on_device = index.to(data.device)
        x = data.batch("train", index_on_device, False)
        if augment and data.augmentable:
            x = shift_and_flip(x, generator, data.flip)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = data.labels["train"][index_on_device]
        with autocast:
            logits = member.model(x)
        value = loss(logits.float(), y, index_on_device)
        member.optimizer.zero_grad(set_to_none=True)
        value.backward()
        member.optimizer.step()
        member.scheduler.step()
        with torch.no_grad():
            if not torch.isfinite(value):
                raise ConfusionError(f"member {member.index}: the loss became {value.item()} at epoch {epoch}; lower --lr")
            loss_sum += value.item() * len(index)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(index)
            if record is not None:
                record[index_on_device] = torch.softmax(logits.float(), dim=1)
        if report is not None:
            report(step + 1, len(parts), loss_sum / seen)
    return loss_sum / seen, correct / seen


VIEWS = ("flip", "left", "right", "up", "down")  # test-time views: a horizontal flip, 2-pixel shifts (zero fill)


def view_of(x, name: str, pad: int = 2):
    """Batch `x` (N, C, H, W) seen through test-time view `name` (one of `VIEWS`)."""
    import torch

    if name == "flip":
        return x.flip(-1)
    shifted = {
        "left": (x[..., :, pad:], (0, pad, 0, 0)),
        "right": (x[..., :, :-pad], (pad, 0, 0, 0)),
        "up": (x[..., pad:, :], (0, 0, 0, pad)),
        "down": (x[..., :-pad, :], (0, 0, pad, 0)),
    }
    if name not in shifted:
        raise ConfusionError(f"unknown view {name!r}; choose from {', '.join(VIEWS)}")
    part, padding = shifted[name]
    out = torch.nn.functional.pad(part, padding)
    return out.contiguous(memory_format=torch.channels_last) if x.is_contiguous(memory_format=torch.channels_last) and x.dim() == 4 else out


def predict(model, data, split: str, batch_size: int, precision: str, *, embed: bool = False, views: tuple[str, ...] = ()):
    """Eval-mode class probabilities (samples, classes) float32 on the CPU. With ``embed``, also
    the input of the model's classifier head (`models.head_layer`), (samples, width) float32; with
    `views`, also the probabilities of each test-time view (`view_of`), (samples, views, classes).
    Returns the probabilities alone, or a tuple (probabilities, embeddings or None, views or None)
    when either is asked."""
    import torch

    from .models import folded_for_inference, head_layer, is_convolutional

    model.eval()
    channels_last = is_convolutional(model)
    inference = folded_for_inference(model)
    n = data.n(split)
    outputs, embedded, viewed = [], [], []
    autocast = torch.autocast(data.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    hook, capture = None, [True]
    if embed:
        head = head_layer(inference)
        if head is None:
            raise ConfusionError(f"{type(model).__name__} has no linear classifier head to take embeddings from")

        def keep(_module, inputs, _output):
            if capture[0]:
                embedded.append(inputs[0].detach().float().flatten(1).cpu())

        hook = head.register_forward_hook(keep)
    try:
        with torch.inference_mode(), autocast:
            for start in range(0, n, batch_size):
                index = torch.arange(start, min(n, start + batch_size), device=data.device)
                x = data.batch(split, index, channels_last)
                capture[0] = True
                outputs.append(torch.softmax(inference(x).float(), dim=1).cpu())
                capture[0] = False
                if views:
                    viewed.append(torch.stack([torch.softmax(inference(view_of(x, v)).float(), dim=1).cpu() for v in views], dim=1))
    finally:
        if hook is not None:
            hook.remove()
        model.train()
    probs = torch.cat(outputs).numpy()
    if not embed and not views:
        return probs
    return probs, torch.cat(embedded).numpy() if embed else None, torch.cat(viewed).numpy() if views else None


# ----------------------------------------------------------------------------- checkpoints
def checkpoint_path(run: Path, index: int) -> Path:
    return Path(run) / CHECKPOINTS / f"member-{index}.pt"


def save_checkpoint(run: Path, member: Member) -> None:
    import torch

    state = {
        "epoch": member.epoch,
        "seed": member.seed,
        "model": member.model.state_dict(),
        "optimizer": member.optimizer.state_dict(),
        "scheduler": member.scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "history": member.history,
    }
    with atomic_path(checkpoint_path(run, member.index)) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        state = load_weights_only(path)
    except Exception as error:  # a damaged file is reported, never half-trusted
        raise RunStoreError(f"checkpoint {path} is unreadable ({str(error).splitlines()[0]}); delete it to retrain that member") from None
    missing = [key for key in ("epoch", "model", "optimizer", "scheduler", "torch_rng") if not isinstance(state, dict) or key not in state]
    if missing:
        raise RunStoreError(f"checkpoint {path} lacks {', '.join(missing)}; delete it to retrain that member")
    state["path"] = str(path)
    return state


def restore(member: Member, state: dict) -> None:
    import torch

    try:
        member.model.load_state_dict(state["model"])
        member.optimizer.load_state_dict(state["optimizer"])
        member.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        member.epoch = int(state["epoch"])
    except (RuntimeError, KeyError, ValueError, TypeError) as error:
        where = state.get("path", "a checkpoint")
        raise RunStoreError(
            f"{where} does not fit member {member.index}'s model ({str(error).splitlines()[0][:160]}); delete it to retrain that member"
        ) from None
    member.history = list(state.get("history", []))


# ----------------------------------------------------------------------------- processes
def run_processes(target: Callable, groups: list, threads: int, handle: Callable[[tuple], None], *, inline: bool = False) -> None:
    """Run target(group, messages, threads) for each group, each in its own spawned process.

    A process sends messages (any picklable object) to `messages`; each reaches `handle` in this process, which may
    raise to stop everything. A process ends by sending ("done",), or ("error", "user"|"bug",
    text), which is raised here as a ConfusionError or a RuntimeError. Processes run with
    tcmalloc and `threads` OpenMP threads, and die with this one (PR_SET_PDEATHSIG). With
    `inline`, the groups run one after another in this process instead (debugging, CUDA).
    """
    if inline:
        import torch

        previous = torch.get_num_threads()
        try:
            for group in groups:
                target(group, _Inline(handle), threads)
        finally:
            torch.set_num_threads(previous)
        return

    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    processes = []
    saved = {k: os.environ.get(k) for k in ("LD_PRELOAD", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update(worker_environment(threads))  # inherited by the spawned processes only
    try:
        with _main_module_hidden() if target.__module__ != "__main__" else contextlib.nullcontext():
            for group in groups:
                process = context.Process(target=_process_main, args=(target, group, messages, threads, os.getpid()), daemon=True)
                process.start()
                processes.append(process)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    done = 0
    try:
        while done < len(groups):
            # Checked at every message, not only when all is quiet: the others may keep talking.
            dead = [p for p in processes if p.exitcode not in (None, 0)]
            if dead:
                raise WorkerDiedError(
                    f"a training process died (exit code {dead[0].exitcode}, e.g. killed or out of memory); rerun the same command to resume"
                )
            try:
                message = messages.get(timeout=1.0)
            except queue_module.Empty:
                continue
            kind = message[0] if isinstance(message, tuple) else None  # the processes' own words, or their target's messages
            if kind == "done":
                done += 1
            elif kind == "error":
                if message[1] == "user":
                    raise ConfusionError(message[2])
                raise RuntimeError("a training process failed:\n" + message[2])
            else:
                handle(message)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join(timeout=10)


@contextlib.contextmanager
def _main_module_hidden():
    """A spawned process first imports its parent's __main__: a user's script (run again, top
    to bottom, where it lacks `if __name__ == "__main__":`) or, under `python -m confusion.cli`,
    every module of the CLI (~1 s). A target that lives in a module needs none of it, so the
    processes started here see an empty __main__."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is None:
            sys.modules.pop("__main__", None)
        else:
            sys.modules["__main__"] = main


def _process_main(target, group, messages, threads, parent: int) -> None:
    die_with_parent(parent)  # first: a parent killed during start-up takes this process with it
    try:
        target(group, messages, threads)
        messages.put(("done",))
    except ConfusionError as error:
        messages.put(("error", "user", str(error)))
    except BaseException:
        messages.put(("error", "bug", traceback.format_exc()))


class _Inline:
    """A stand-in for the message queue when jobs run in the coordinator itself."""

    def __init__(self, handle: Callable[[tuple], None]):
        self.handle = handle

    def put(self, message: tuple) -> None:
        self.handle(message)
