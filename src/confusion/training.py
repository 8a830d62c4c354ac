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
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .analyses import ensemble_accuracy
from .cluster import RETRIES, task_result
from .datasets import check_dataset_name, check_root, data_kind, is_text, load_for_run, normalization_stats
from .engine import VIEWS as VIEW_NAMES
from .engine import (
    bootstrap,
    checkpoint_path,
    fit_epoch,
    input_data,
    load_checkpoint,
    make_member,
    predict,
    resolve_precision,
    restore,
    run_processes,
    save_checkpoint,
)
from .errors import InputError, OccupiedError, ParameterError
from .events import EpochEnded, EpochsCommitted, StepEnded, TrainingHooks
from .reduced import check_keep
from .store import LOCK_FILE, RunStore, SplitData, check_usable_directory, hold_lock
from .store.format import MAX_MEMBERS
from .text import default_cache

__all__ = [
    "MAX_EPOCHS",
    "MAX_MEMBERS",
    "TrainConfig",
    "check_counts",
    "check_device",
    "checked_data",
    "describe_dataset_for_run",
    "final_accuracy",
    "load_training_data",
    "open_or_create",
    "run_members",
    "train",
    "train_on_cluster",
]

# Upper limits of the counts a command takes: beyond them a typo (an extra digit or three), not a
# plan, and the run would fill memory before its first epoch.
MAX_EPOCHS = 100_000


def check_device(device: str) -> None:
    """`device` is "cpu" or "cuda"."""
    if device not in ("cpu", "cuda"):
        raise ParameterError(f"{{device}} must be cpu or cuda, got {device!r}", "device")


def check_views(views: str) -> tuple[str, ...]:
    """The test-time views a setting names ("auto" and "none" included), checked.

    Parameters
    ----------
    views : str
        "auto", "none", or a comma-separated list of flip, left, right, up and down.

    Returns
    -------
    tuple of str
        The views listed (empty for "auto" and "none").

    Raises
    ------
    ParameterError
        For another name (parameter ``views``).
    """
    if views in ("auto", "none"):
        return ()
    names = tuple(v.strip() for v in views.split(","))
    unknown = [v for v in names if v not in VIEW_NAMES]
    if unknown or not names or len(set(names)) != len(names):
        raise ParameterError(f"{{views}} must be auto, none or a list of {', '.join(VIEW_NAMES)} (each once), got {views!r}", "views")
    return names


def view_names(views: str, dataset) -> tuple[str, ...]:
    """The test-time views a run records: none for feature and text data; "auto" on images: a
    horizontal flip where it keeps the label, and 2-pixel shifts in the four directions."""
    if views == "none" or dataset.kind != "images":
        return ()
    if views == "auto":
        return tuple(v for v in VIEW_NAMES if v != "flip" or dataset.flip_preserves_label)
    return check_views(views)


def check_counts(members: int, epochs: int) -> None:
    """1 <= `members` <= MAX_MEMBERS and 1 <= `epochs` <= MAX_EPOCHS."""
    for name, value, most in (("members", members, MAX_MEMBERS), ("epochs", epochs, MAX_EPOCHS)):
        if not 1 <= value <= most:
            raise ParameterError(f"{{{name}}} must be at least 1 and at most {most:,}, got {value}", name)


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
    bagging: bool = False  # each member trains on its own bootstrap resample of the train split
    feature_subset: float | None = None  # feature/text data: each member sees this fraction of the features
    cache: str | None = None  # where text embeddings are cached (default: text.default_cache(), shared by every run)
    encoder: str | None = None  # text data: a sentence-transformers model (default all-MiniLM-L6-v2)
    keep: str = "raw"  # "raw" class probabilities, or only the "reduced" record (confusion.reduced)
    embeddings: str = "last"  # record the members' penultimate layer at the "last" recorded epoch, "all" of them, or "none"
    views: str = (
        "auto"  # test-time views recorded with the embeddings: "auto" (images: flip where it keeps the label, 2-pixel shifts), "none", or a list
    )

    def __post_init__(self) -> None:
        self.check_values()

    def check_values(self) -> TrainConfig:
        """Each setting's own value checked (done when a config is made); errors name the parameter.

        Returns
        -------
        TrainConfig
            Itself.

        Raises
        ------
        ParameterError
            Naming the first setting that cannot be used.
        """
        check_counts(self.members, self.epochs)
        if self.record_every < 1:
            raise ParameterError("{record_every} must be at least 1", "record_every")
        for name, value, allowed in (
            ("record_train", self.record_train, ("eval", "in-loop")),
            ("optimizer", self.optimizer, ("adam", "sgd")),
            ("schedule", self.schedule, ("cosine", "constant")),
            ("precision", self.precision, ("auto", "fp32", "bf16")),
            ("embeddings", self.embeddings, ("last", "all", "none")),
        ):
            if value not in allowed:
                choices = f"{', '.join(allowed[:-1])} or {allowed[-1]}"
                raise ParameterError(f"{{{name}}} must be {choices}, got {value!r}", name)
        check_keep(self.keep)
        check_views(self.views)
        check_device(self.device)
        if not (self.lr > 0 and math.isfinite(self.lr)) or self.batch_size < 2:
            raise ParameterError("{lr} must be a positive number and {batch_size} at least 2", "lr", "batch_size")
        if self.member is not None and not 0 <= self.member < self.members:
            raise ParameterError(
                f"{{member}} must be in 0..{self.members - 1} for {{members}} {self.members}, got {self.member}", "member", "members"
            )
        if not 0 <= self.seed < 2**63 - 2**20 or not 0 <= self.split_seed < 2**63:
            raise ParameterError("{seed} and {split_seed} must be whole numbers from 0 to 2^63", "seed", "split_seed")
        if self.image_size is not None and not 4 <= self.image_size <= 4096:
            raise ParameterError(f"{{image_size}} must be 4 to 4096 pixels, got {self.image_size}", "image_size")
        for name, value, least in (("limit_train", self.limit_train, 1), ("limit_val", self.limit_val, 1), ("workers", self.workers, 0)):
            if value is not None and value < least:
                raise ParameterError(f"{{{name}}} must be at least {least}, got {value}", name)
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)) or self.eval_batch_size < 1:
            raise ParameterError("{weight_decay} must be a non-negative number", "weight_decay")
        return self

    def check(self) -> TrainConfig:
        """Every setting checked, together, before any data is read: `check_values`, then the
        dataset's name and root and what the architectures and options need of the data.

        Returns
        -------
        TrainConfig
            Itself.

        Raises
        ------
        InputError
            Naming the first setting that cannot be used (a `ParameterError` where one setting is
            at fault).
        """
        self.check_values()
        check_dataset_name(self.data)
        check_root(self.root)
        archs = [a.strip() for a in self.arch.split(",")]
        if not all(archs) or (len(archs) > 1 and len(archs) != self.members):
            raise ParameterError(
                f"{{arch}} lists {len(archs)} architectures for {{members}} {self.members}: give one, or one per member", "arch", "members"
            )
        if self.feature_subset is not None and not (0 < self.feature_subset <= 1):
            raise ParameterError(f"{{feature_subset}} must be a fraction in (0, 1], got {self.feature_subset}", "feature_subset")
        kind = data_kind(self.data)
        if self.encoder is not None and kind != "text":
            raise ParameterError("{encoder} embeds documents: it goes with text data (text:PATH or bbc-news)", "encoder")
        if kind == "images" and self.feature_subset is not None:
            raise ParameterError("{feature_subset} picks feature columns: it is for features: and text data, not images", "feature_subset")
        if kind != "images":
            from .models import FEATURE_ARCHS

            wrong = [a for a in archs if a not in FEATURE_ARCHS]
            if wrong:
                raise InputError(f"{wrong[0]} needs images; feature and text data train {', '.join(FEATURE_ARCHS)}")
        return self

    def check_data(self, dataset) -> None:
        """What can be checked once the data is loaded, before any training starts."""
        import torch

        from .engine import member_arch, member_model
        from .models import head_layer

        tried = set()
        for index in range(self.members):  # unknown names, or image models on feature vectors, fail here
            model = member_model(self, index, dataset.input_shape, dataset.n_classes)
            arch = member_arch(self.arch, index)
            if arch in tried:
                continue
            tried.add(arch)
            if self.embeddings != "none" and head_layer(model) is None:
                raise ParameterError(
                    f"{{arch}} {arch} has no linear classifier head to take embeddings from; pass {{embeddings}} none", "arch", "embeddings"
                )
            try:  # one forward pass: a model that cannot take these inputs (alexnet on 8x8) says so now
                with torch.no_grad():
                    model.eval()(torch.zeros((2, *dataset.input_shape)))
            except RuntimeError as error:
                shape = "x".join(map(str, dataset.input_shape))
                raise ParameterError(f"{{arch}} {arch} cannot take {shape} inputs: {str(error).splitlines()[0][:160]}", "arch") from None

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.members)]

    def record_epochs(self) -> list[int]:
        """Training epochs (1-based) whose predictions are recorded: every K-th, and the last."""
        epochs = [e for e in range(1, self.epochs + 1) if e % self.record_every == 0]
        return epochs if epochs and epochs[-1] == self.epochs else [*epochs, self.epochs]

    def identity(self) -> dict[str, Any]:
        """The settings a resumed run must share with the one that started it."""
        ignored = {"workers", "eval_batch_size", "device", "root", "member", "cache"}
        return {k: v for k, v in asdict(self).items() if k not in ignored}


# ----------------------------------------------------------------------------- data
def load_training_data(config: TrainConfig):
    return load_for_run(asdict(config))


# ----------------------------------------------------------------------------- worker
def run_members(group: tuple, messages, threads: int) -> None:
    """Train members `indices` of run `run` to the end, writing predictions and checkpoints every
    epoch (group = (indices, settings as a dict, run directory)); progress goes to `messages`."""
    import torch

    indices, config_dict, run = group
    config = TrainConfig(**config_dict)
    torch.set_num_threads(threads)
    device = torch.device(config.device)
    dataset = load_training_data(config)
    store = RunStore.open(run, mode="a")
    normalization = store.meta.get("normalization")
    data = input_data(dataset, device, (normalization["mean"], normalization["std"]) if normalization else None)
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
        member = make_member(index, config, dataset.input_shape, dataset.n_classes, n_train, device)
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
                    messages.put(StepEnded(member.index, epoch, step, steps, loss))

            sampler = bootstrap(n_train, member.seed) if config.bagging else None
            loss, accuracy = fit_epoch(
                member,
                data,
                epoch=epoch,
                batch_size=config.batch_size,
                augment=config.augment,
                precision=precision,
                sampler=sampler,
                record=in_loop,
                report=report,
            )
            train_seconds = time.perf_counter() - started
            val_accuracy = float("nan")
            if recording:
                embed = config.embeddings == "all" or (config.embeddings == "last" and epoch == config.epochs)
                views = view_names(config.views, dataset) if embed else ()
                for split in dataset.splits:
                    if embed:  # the same eval pass gives the head's inputs, and the views
                        probs, embeddings, on_views = predict(member.model, data, split, config.eval_batch_size, precision, embed=True, views=views)
                        writer.log_embeddings(split, epoch, embeddings)
                        if on_views is not None:
                            writer.log_views(split, epoch, on_views)
                    elif not (split == "train" and in_loop is not None):
                        probs = predict(member.model, data, split, config.eval_batch_size, precision)
                    if split == "train" and in_loop is not None:
                        probs = in_loop.cpu().numpy()
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
            messages.put(EpochEnded(member.index, epoch, member.history[-1]))


# ----------------------------------------------------------------------------- coordinator
def describe_dataset_for_run(dataset) -> dict:
    return {name: SplitData(ids=split.ids, labels=split.labels, sources=split.sources, meta=split.meta) for name, split in dataset.splits.items()}


def checked_data(config: TrainConfig, out: Path):
    """(config, dataset): every setting checked and the data loaded, before anything is trained;
    a folder made here is removed again when that fails."""
    import torch

    config.check()
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ParameterError("{device} cuda asked for, but no CUDA device is available here", "device")
    check_usable_directory(out, exist_ok=True)  # before a lock file (or an embedding cache) goes into a user's folder
    if config.cache is None and is_text(config.data):
        config = replace(config, cache=str(default_cache()))  # shared by every run (run.json keeps None)
    made_here = not out.exists()
    if (out / LOCK_FILE).exists():  # a run another command is training: refused now, not after loading the data
        with hold_lock(out):
            pass
    try:
        dataset = load_training_data(config)
        config.check_data(dataset)
        describe_dataset_for_run(dataset)  # ids and labels a run can hold (unique ids...): refused before a folder is made
        if dataset.kind != "images" and config.augment:  # shifts and flips are for images: run.json says what ran
            config = replace(config, augment=False)
    except BaseException:
        if made_here:  # nothing but a cache was written: leave no folder behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    return config, dataset


def open_or_create(out: Path, config: TrainConfig, dataset):
    """The run at `out`: made here, or made by an earlier or concurrent job of the same run."""
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
            "dataset": {"name": config.data, "kind": dataset.kind, "input_shape": list(dataset.input_shape), **dataset.info},
            "arch": config.arch,
            "config": {**asdict(config), "cache": None if config.cache == str(default_cache()) else config.cache},
            "planned_epochs": config.record_epochs(),
            "normalization": dict(zip(("mean", "std"), normalization_stats(dataset.splits["train"].images))),
            # Fixed by the run, not by how its members are scheduled, so a resumed or
            # one-job-per-member run computes bitwise what a single command would.
            "threads_per_member": max(1, cores // config.members) if config.device == "cpu" else max(1, cores // 2),
        },
        exist_ok=True,
        keep=config.keep,
    )
    previous = store.meta.get("config")
    if store.meta.get("source") != "train" or previous is None:
        raise OccupiedError(f"{out} is a run store that was not made by `confusion train`; choose a new {{path}}", "path")
    current = config.identity()
    if dataset.kind != "images":  # never augmented, whatever an older run.json recorded
        current.pop("augment")
    defaults = asdict(TrainConfig())  # a setting added since the run was made had its default then
    differing = [k for k in current if previous.get(k, defaults.get(k)) != current[k]]
    if differing:
        details = ", ".join(f"{k}: {previous.get(k)!r} there, {current[k]!r} now" for k in differing[:4])
        raise OccupiedError(f"{out} was trained with other settings ({details}); use a new {{path}} or the same settings", "path")
    return store


def train(
    config: TrainConfig,
    out: str | os.PathLike,
    *,
    hooks: TrainingHooks | None = None,
) -> RunStore:
    """Train the ensemble into run directory `out` (resuming it if it exists). Returns the RunStore.

    With ``config.member`` set, only that member is trained: one job per seed, each joining
    the run the first one created; the store commits an epoch once every job has ended it.
    `hooks` (a `confusion.events.TrainingHooks`) hears every step, every member's epoch and
    every commit, for progress display.
    """
    hooks = hooks or TrainingHooks()
    out = Path(out)
    config, dataset = checked_data(config, out)
    # The whole command owns the run, or a --member job owns its member (its worker holds the lock).
    with hold_lock(out) if config.member is None else contextlib.nullcontext():
        store = open_or_create(out, config, dataset)
        if config.member is not None:
            with hold_lock(out, f".member-{config.member}.lock"):
                pass  # refused now, not after the worker loaded its data
        mine = list(range(config.members)) if config.member is None else [config.member]
        committed_before = set(store.recorded_epochs)

        def report_commits() -> None:
            store.refresh()
            new = [epoch for epoch in store.recorded_epochs if epoch not in committed_before]
            if new:
                committed_before.update(new)
                EpochsCommitted(new).fire(hooks)

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

        def handle(event: StepEnded | EpochEnded) -> None:
            if isinstance(event, EpochEnded):
                report_commits()
            event.fire(hooks)

        jobs = [(group, asdict(config), str(out)) for group in groups]
        run_processes(run_members, jobs, threads, handle, inline=not workers)
        report_commits()
    return store


def final_accuracy(store, split: str = "val") -> float:
    """Top-1 accuracy of the ensemble average at the last committed epoch (labelled samples)."""
    if not store.recorded_epochs:
        return float("nan")
    return ensemble_accuracy(store.final_predictions(split), store.labels(split))


def _train_member(settings: dict, out: str) -> None:
    """One member's `confusion train --member i` job, run inside a Dask worker."""
    train(TrainConfig(**settings), out)


def train_on_cluster(config: TrainConfig, out: str | Path, client: Any, hooks: TrainingHooks | None = None) -> RunStore:
    """Train every member of `config` as one task each on the cluster of `client`; returns the
    RunStore. The run is made here first (settings and data checked before any task starts);
    each task is that member's `--member` job and holds its member's lock, as those jobs do.
    Workers must share the run directory (one machine, or a shared filesystem) and have this
    package installed. A worker lost mid-run is replaced by the scheduler, which runs the
    member's task again: it resumes from the member's last ended epoch (its checkpoint), so the
    run ends as an uninterrupted one would."""
    out = Path(out)
    config, dataset = checked_data(config, out)
    open_or_create(out, config, dataset)
    del dataset
    futures = []
    for member in range(config.members):
        settings = asdict(replace(config, member=member, workers=0))  # trained in the worker's own process
        key = f"confusion-train-{out.name}-member-{member}-{time.time_ns()}"
        futures.append(client.submit(_train_member, settings, str(out), key=key, retries=RETRIES, pure=False))
    store = RunStore.open(out)
    seen: list[int] = []
    while True:
        finished = all(f.done() for f in futures)
        store.refresh()
        if hooks is not None and store.recorded_epochs != seen:
            EpochsCommitted([e for e in store.recorded_epochs if e not in seen]).fire(hooks)
            seen = list(store.recorded_epochs)
        if finished:
            break
        time.sleep(0.5)
    for member, future in enumerate(futures):
        task_result(future, f"member {member}'s job failed on the Dask cluster (tried {RETRIES + 1} times)")
    return RunStore.open(out)
