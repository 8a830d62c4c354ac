"""The ensemble trainer: M members that differ only by seed, an eval pass every epoch.

Read top to bottom: `TrainConfig` (the paper's defaults), the tensors a member trains on,
one training epoch, the eval pass, the worker that trains some members and writes their
predictions, and `train`, the coordinator that starts the workers and commits epochs.

Each member is trained by its own single-threaded process (measured faster on a CPU than one
process with all threads, and the natural unit to spread over machines); an epoch slot in the
run store is committed only once every member has written it. Every epoch each member saves
model, optimizer, scheduler and RNG state, so rerunning a killed command continues where it
stopped and ends with the same scores (bitwise on the CPU in fp32).
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import queue as queue_module
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import ConfusionError, InputError, RunStoreError

CHECKPOINTS = "checkpoints"


@dataclass
class TrainConfig:
    """What `confusion train` runs. Defaults follow the paper where it says something
    (3 seeds, an eval pass over every split after every epoch)."""

    data: str = "fashion-mnist"
    arch: str = "cnn-s"
    members: int = 3
    epochs: int = 20
    seed: int = 0  # member i trains with seed + i: initialisation, data order, augmentation
    record_every: int = 1  # record predictions every K epochs (and always the last)
    record_train: str = "eval"  # "eval": separate eval-mode pass; "in-loop": from the training forward pass
    optimizer: str = "adam"  # "adam" or "sgd" (momentum 0.9, nesterov)
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"  # "cosine" (to 1% of lr) or "constant"
    batch_size: int = 128
    augment: bool = True  # random 2-pixel shifts, plus horizontal flips where they keep the label
    limit_train: int | None = None  # train on a seeded subset of this many training samples
    limit_val: int | None = None  # record a seeded subset of this many validation samples
    root: str | None = None  # where the dataset's files are
    unlabeled: str | None = None  # extra split without labels
    image_size: int | None = None  # resize (imagefolder) to this many pixels square
    split_seed: int = 0  # seeded train/val split for datasets without one, and the limit_* subsets
    device: str = "cpu"  # "cpu" or "cuda"
    precision: str = "auto"  # "auto" (bf16 only where the hardware computes in it), "fp32", "bf16"
    workers: int | None = None  # processes; default one per member on the CPU, 1 on CUDA
    member: int | None = None  # train only this member (one job per seed); None = all
    eval_batch_size: int = 256  # measured: larger batches infer no faster on a CPU

    def check(self) -> "TrainConfig":
        if self.members < 1 or self.epochs < 1 or self.record_every < 1:
            raise InputError("--members, --epochs and --record-every must be at least 1")
        if self.record_train not in ("eval", "in-loop"):
            raise InputError(f"--record-train must be eval or in-loop, got {self.record_train!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise InputError(f"--optimizer must be adam or sgd, got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise InputError(f"--schedule must be cosine or constant, got {self.schedule!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise InputError(f"--precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.device not in ("cpu", "cuda"):
            raise InputError(f"--device must be cpu or cuda, got {self.device!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)) or self.batch_size < 2:
            raise InputError("--lr must be a positive number and --batch-size at least 2")
        if self.member is not None and not 0 <= self.member < self.members:
            raise InputError(f"--member must be in 0..{self.members - 1} for --members {self.members}, got {self.member}")
        return self

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.members)]

    def record_epochs(self) -> list[int]:
        """Training epochs (1-based) whose predictions are recorded: every K-th, and the last."""
        epochs = [e for e in range(1, self.epochs + 1) if e % self.record_every == 0]
        return epochs if epochs and epochs[-1] == self.epochs else [*epochs, self.epochs]

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share with the one that started it."""
        ignored = {"workers", "eval_batch_size", "device", "root", "member"}
        return {k: v for k, v in asdict(self).items() if k not in ignored}


# ----------------------------------------------------------------------------- data
def load_training_data(config: TrainConfig):
    from .datasets import load_for_run

    return load_for_run(asdict(config))


class DeviceData:
    """A dataset's splits as uint8 tensors on the device, normalised per batch."""

    def __init__(self, dataset, device, normalization: tuple[list[float], list[float]] | None = None):
        import torch

        from .datasets import normalization_stats

        self.device = device
        self.images = {name: torch.from_numpy(split.images).to(device) for name, split in dataset.splits.items()}
        self.labels = {name: torch.from_numpy(split.labels).to(device) for name, split in dataset.splits.items()}
        # Per-channel mean and std of the training pixels, in [0, 1] units (or the model's own).
        mean, std = normalization or normalization_stats(dataset.splits["train"].images)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.flip = dataset.flip_preserves_label

    def batch(self, split: str, index, channels_last: bool):
        import torch

        x = self.images[split][index].float().div_(255.0).sub_(self.mean).div_(self.std)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x


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


# ----------------------------------------------------------------------------- one member
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


def resolve_precision(config: TrainConfig) -> str:
    import torch

    from ._runtime import cpu_has_bf16

    if config.precision != "auto":
        return config.precision
    if config.device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return max(1, math.ceil(n_train / batch_size))


def make_member(index: int, config: TrainConfig, image_shape, n_classes: int, n_train: int, device) -> Member:
    import torch

    from .models import build_model, is_convolutional

    seed = config.seed + index
    torch.manual_seed(seed)
    model = build_model(config.arch, image_shape[0], image_shape[1], n_classes).to(device)
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


def checkpoint_path(run: Path, index: int) -> Path:
    return Path(run) / CHECKPOINTS / f"member-{index}.pt"


def save_checkpoint(run: Path, member: Member) -> None:
    import torch

    from ._files import atomic_path

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
    import torch

    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file is reported, never half-trusted
        raise RunStoreError(f"checkpoint {path} is unreadable ({error}); delete it to retrain that member") from None


def restore(member: Member, state: dict) -> None:
    import torch

    member.model.load_state_dict(state["model"])
    member.optimizer.load_state_dict(state["optimizer"])
    member.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    member.epoch = int(state["epoch"])
    member.history = list(state.get("history", []))


def batches(order, batch_size: int):
    """Split a permutation into nearly equal batches (no batch of 1, which BatchNorm rejects)."""
    count = max(1, math.ceil(len(order) / batch_size))
    bounds = np.linspace(0, len(order), count + 1).round().astype(int)
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def train_one_epoch(member: Member, data: DeviceData, config: TrainConfig, precision: str, record=None, report=None):
    """One pass over the training split in a seeded order. Returns (mean loss, accuracy).

    record: optional (samples, classes) float32 tensor that receives the softmax of the
    training forward pass (--record-train in-loop).
    """
    import torch
    from torch.nn import functional as F

    from .models import is_convolutional

    epoch = member.epoch + 1
    generator = torch.Generator().manual_seed(member.seed * 1_000_003 + epoch)
    n_train = data.images["train"].shape[0]
    order = torch.randperm(n_train, generator=generator)
    channels_last = is_convolutional(member.model)
    autocast = torch.autocast(data.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    member.model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    parts = batches(order, config.batch_size)
    for step, index in enumerate(parts):
        index_on_device = index.to(data.device)
        x = data.batch("train", index_on_device, False)
        if config.augment:
            x = shift_and_flip(x, generator, data.flip)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = data.labels["train"][index_on_device]
        with autocast:
            logits = member.model(x)
            loss = F.cross_entropy(logits, y)
        member.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        member.optimizer.step()
        member.scheduler.step()
        with torch.no_grad():
            if not torch.isfinite(loss):
                raise ConfusionError(f"member {member.index}: the loss became {loss.item()} at epoch {epoch}; lower --lr")
            loss_sum += loss.item() * len(index)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(index)
            if record is not None:
                record[index_on_device] = torch.softmax(logits.float(), dim=1)
        if report is not None:
            report(step + 1, len(parts), loss_sum / seen)
    return loss_sum / seen, correct / seen


def predict(model, data: DeviceData, split: str, batch_size: int, precision: str):
    """Eval-mode class probabilities (samples, classes) float32 on the CPU."""
    import torch

    from .models import is_convolutional

    model.eval()
    channels_last = is_convolutional(model)
    n = data.images[split].shape[0]
    outputs = []
    autocast = torch.autocast(data.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.inference_mode(), autocast:
        for start in range(0, n, batch_size):
            index = torch.arange(start, min(n, start + batch_size), device=data.device)
            logits = model(data.batch(split, index, channels_last))
            outputs.append(torch.softmax(logits.float(), dim=1).cpu())
    model.train()
    return torch.cat(outputs).numpy()


# ----------------------------------------------------------------------------- worker
def run_members(indices: list[int], config_dict: dict, run: str, messages, threads: int, worker: bool) -> None:
    """Train members `indices` to the end, writing predictions and checkpoints every epoch."""
    import torch

    from .store import RunStore

    config = TrainConfig(**config_dict)
    if worker:
        from ._runtime import die_with_parent

        die_with_parent()
    torch.set_num_threads(threads)
    device = torch.device(config.device)
    dataset = load_training_data(config)
    data = DeviceData(dataset, device)
    store = RunStore.open(run, mode="a")
    precision = resolve_precision(config)
    record_epochs = config.record_epochs()
    n_train = len(dataset.splits["train"])
    with contextlib.ExitStack() as stack:
        writers = {index: stack.enter_context(store.member_writer(index)) for index in indices}
        _train_members(indices, config, run, messages, device, dataset, data, writers, precision, record_epochs, n_train)


def _train_members(indices, config, run, messages, device, dataset, data, writers, precision, record_epochs, n_train):
    import torch

    members = []
    for index in indices:
        member = make_member(index, config, dataset.image_shape, dataset.n_classes, n_train, device)
        state = load_checkpoint(checkpoint_path(Path(run), index))
        if state is not None:
            restore(member, state)
        members.append(member)
    for epoch in range(1, config.epochs + 1):
        for member in members:
            if member.epoch >= epoch:
                continue
            started = time.perf_counter()
            writer = writers[member.index]
            # An epoch ended before a crash lost its checkpoint is trained again (bitwise the
            # same on the CPU) but not recorded again: a committed epoch never changes.
            recording = epoch in record_epochs and epoch > writer.last_epoch
            in_loop = None
            if recording and config.record_train == "in-loop":
                in_loop = torch.zeros((n_train, dataset.n_classes), dtype=torch.float32, device=device)

            def report(step, steps, loss, member=member, epoch=epoch):
                if step == steps or step % 20 == 0:
                    messages.put(("step", member.index, epoch, step, steps, loss))

            loss, accuracy = train_one_epoch(member, data, config, precision, in_loop, report)
            train_seconds = time.perf_counter() - started
            val_accuracy = float("nan")
            if recording:
                for split in dataset.splits:
                    if split == "train" and in_loop is not None:
                        probs = in_loop.cpu().numpy()
                    else:
                        probs = predict(member.model, data, split, config.eval_batch_size, precision)
                    writer.log(split, epoch, probs)
                    if split == "val":
                        val_accuracy = float((probs.argmax(1) == dataset.splits["val"].labels).mean())
            member.epoch = epoch
            metrics = {
                "epoch": epoch,
                "train_loss": loss,
                "train_accuracy": accuracy,
                "val_accuracy": val_accuracy,
                "train_seconds": train_seconds,
                "eval_seconds": time.perf_counter() - started - train_seconds,
            }
            member.history.append(metrics)
            if recording:
                writer.end_epoch(epoch, info=metrics)
            save_checkpoint(Path(run), member)  # after the predictions: a crash in between redoes the epoch
            messages.put(("epoch", member.index, epoch, member.history[-1]))


def _worker_main(indices, config_dict, run, messages, threads):
    try:
        run_members(indices, config_dict, run, messages, threads, worker=True)
        messages.put(("done", tuple(indices)))
    except ConfusionError as error:
        messages.put(("error", "user", str(error)))
    except BaseException:  # noqa: BLE001 - a bug: send the traceback to the coordinator
        messages.put(("error", "bug", traceback.format_exc()))


# ----------------------------------------------------------------------------- coordinator
def describe_dataset_for_run(dataset) -> dict:
    from .store import SplitData

    return {name: SplitData(ids=split.ids, labels=split.labels, sources=split.sources) for name, split in dataset.splits.items()}


def _open_or_create(out: Path, config: TrainConfig, dataset):
    """The run at `out`: made here, or made by an earlier or concurrent job of the same run."""
    from .datasets import normalization_stats
    from .store import RunStore

    cores = os.cpu_count() or 1
    store = RunStore.create(
        out,
        n_classes=dataset.n_classes,
        members=[{"index": i, "seed": config.seed + i} for i in range(config.members)],
        epoch_capacity=len(config.record_epochs()),
        splits=describe_dataset_for_run(dataset),
        classes=dataset.classes,
        info={
            "source": "train",
            "dataset": {"name": config.data, "image_shape": list(dataset.image_shape), **dataset.info},
            "arch": config.arch,
            "config": asdict(config),
            "planned_epochs": config.record_epochs(),
            "normalization": dict(zip(("mean", "std"), normalization_stats(dataset.splits["train"].images))),
            # Fixed by the run, not by how its members are scheduled, so a resumed or
            # one-job-per-member run computes bitwise what a single command would.
            "threads_per_member": max(1, cores // config.members) if config.device == "cpu" else max(1, cores // 2),
        },
        exist_ok=True,
    )
    previous = store.meta.get("config")
    if store.meta.get("source") != "train" or previous is None:
        raise RunStoreError(f"{out} is a run store that was not made by `confusion train`; choose a new --out")
    current = config.identity()
    differing = [k for k in current if previous.get(k) != current[k]]
    if differing:
        details = ", ".join(f"{k}: {previous.get(k)!r} there, {current[k]!r} now" for k in differing[:4])
        raise RunStoreError(f"{out} was trained with other settings ({details}); use a new --out or the same settings")
    return store


def train(
    config: TrainConfig,
    out: str | os.PathLike,
    *,
    on_event: Callable[[tuple], None] | None = None,
):
    """Train the ensemble into run directory `out` (resuming it if it exists). Returns the RunStore.

    With ``config.member`` set, only that member is trained: one job per seed, each joining
    the run the first one created; the store commits an epoch once every job has ended it.
    on_event receives the workers' messages (("step", member, epoch, step, steps, loss),
    ("epoch", member, epoch, metrics), ("commit", epoch)) for progress display.
    """
    import torch

    from .store import check_usable_directory, hold_lock

    config.check()
    if config.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but no CUDA device is available here")
    out = Path(out)
    dataset = load_training_data(config)
    from .models import build_model

    build_model(config.arch, dataset.image_shape[0], dataset.image_shape[1], dataset.n_classes)  # unknown names fail here
    check_usable_directory(out, exist_ok=True)  # before a lock file goes into a user's folder
    # The whole command owns the run, or a --member job owns its member (its worker holds the lock).
    with hold_lock(out) if config.member is None else contextlib.nullcontext():
        store = _open_or_create(out, config, dataset)
        if config.member is not None:
            with hold_lock(out, f".member-{config.member}.lock"):
                pass  # refused now, not after the worker loaded its data
        mine = list(range(config.members)) if config.member is None else [config.member]
        committed_before = set(store.recorded_epochs)

        def report_commits() -> None:
            store.refresh()
            for epoch in store.recorded_epochs:
                if epoch not in committed_before:
                    committed_before.add(epoch)
                    if on_event:
                        on_event(("commit", epoch))

        finished = {}
        for i in mine:
            state = load_checkpoint(checkpoint_path(out, i))
            finished[i] = int(state["epoch"]) if state is not None else 0
        store.commit_ready()
        pending = [i for i in mine if finished[i] < config.epochs]
        if not pending:
            report_commits()
            return store

        if config.workers is not None:
            workers = config.workers
        else:
            workers = 1 if config.device == "cuda" else len(pending)
        workers = max(0, min(workers, len(pending)))
        groups = [g for g in ([pending[w::workers] for w in range(workers)] if workers else [pending]) if g]
        threads = int(store.meta.get("threads_per_member") or 1)
        done_groups = 0

        def handle(message: tuple) -> None:
            nonlocal done_groups
            kind = message[0]
            if kind == "epoch":
                report_commits()
            elif kind == "done":
                done_groups += 1
            elif kind == "error":
                if message[1] == "user":
                    raise ConfusionError(message[2])
                raise RuntimeError("a training process failed:\n" + message[2])
            if on_event and kind in ("step", "epoch"):
                on_event(message)

        if not workers:  # in this process, one member after another (debugging, CUDA)
            previous_threads = torch.get_num_threads()
            try:
                run_members(pending, asdict(config), str(out), _Inline(handle), threads, worker=False)
            finally:
                torch.set_num_threads(previous_threads)
            report_commits()
            return store
        _run_workers(groups, config, out, threads, handle, lambda: done_groups)
        report_commits()
    return store


def _run_workers(groups, config: TrainConfig, out: Path, threads: int, handle, done_groups) -> None:
    """One spawned process per group of members; their messages go to `handle` until all are done."""
    from ._runtime import worker_environment

    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    processes = []
    saved = {k: os.environ.get(k) for k in ("LD_PRELOAD", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update(worker_environment(threads))  # inherited by the spawned workers only
    try:
        for group in groups:
            process = context.Process(target=_worker_main, args=(group, asdict(config), str(out), messages, threads), daemon=True)
            process.start()
            processes.append(process)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        while done_groups() < len(groups):
            try:
                handle(messages.get(timeout=1.0))
            except queue_module.Empty:
                dead = [p for p in processes if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"a training process died (exit code {dead[0].exitcode}); rerun to resume") from None
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join(timeout=10)


class _Inline:
    """A stand-in for the message queue when members train in the coordinator itself."""

    def __init__(self, handle: Callable[[tuple], None]):
        self.handle = handle

    def put(self, message: tuple) -> None:
        self.handle(message)


def final_accuracy(store, split: str = "val") -> float:
    """Top-1 accuracy of the ensemble average at the last committed epoch (labelled samples)."""
    if not store.recorded_epochs:
        return float("nan")
    labels = store.labels(split)
    slot = len(store.recorded_epochs) - 1
    probs = store.probs(split)[:, slot].astype(np.float32).mean(axis=0)
    known = labels >= 0
    return float((probs.argmax(1)[known] == labels[known]).mean()) if known.any() else float("nan")
