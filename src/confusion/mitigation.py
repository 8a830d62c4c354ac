"""Mitigation with confusion bands as groups (paper 3.4): ERM, GroupDRO and upsampling.

Nobody has group labels; a run's train-split confusion stands in for them. Samples are cut
into bands by their score (by default two, split in the middle of [0, log2 C] bits, as the
paper split ImageNet's 0-10 bits at 5), optionally crossed with classes. Then
  - erm: plain cross-entropy, the baseline;
  - groupdro: Sagawa et al. (2020): per-group losses in each batch, group weights
    q <- q * exp(eta * loss_g), renormalised, loss = q . group losses; optional group
    adjustment C / sqrt(n_g) and group-balanced sampling;
  - upsample: as in JTT (Liu et al. 2021), every high-band sample is seen `factor` times
    per epoch.
Each method trains the same K seeds; validation samples are banded by their own confusion
(no labels needed for that) and the top-1 error per band is compared with ERM's.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ._files import write_json_atomic
from .analyses import bin_index
from .datasets import load_for_run
from .difficulty import IN_BITS, LABEL_FREE, label_free_score
from .engine import fit_epoch, group_balanced, input_data, make_member, member_arch, predict, resolve_precision, run_processes, upsampled
from .errors import InputError, ParameterError
from .store import RunStore, hold_lock
from .training import TrainConfig, check_counts, check_device

__all__ = [
    "METHODS",
    "GroupDRO",
    "MitigationConfig",
    "assign_bands",
    "band_edges",
    "band_names",
    "groups_from_bands",
    "mitigate",
]

METHODS = ("erm", "groupdro", "upsample")


@dataclass
class MitigationConfig:
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    arch: str | None = None  # default: the scoring run's architecture (its first member's)
    epochs: int = 10
    members: int = 3  # seeds per method (the same seeds for every method)
    seed: int = 100  # first seed; distinct from the scoring run's so no model is reused
    lr: float = 1e-3
    batch_size: int = 128
    augment: bool = True
    score: str = "confusion"  # the score that bands the samples: one in bits (difficulty.IN_BITS)
    band_edges: list[float] | None = None  # in bits; default: the middle of [0, log2 C]
    quantiles: list[float] | None = None  # alternatively: edges at these quantiles of the train scores
    per_class_groups: bool = False
    eta: float = 0.01  # GroupDRO step size
    group_adjustment: float = 0.0  # GroupDRO's C: adds C / sqrt(n_g) to group g's loss
    balanced_sampling: bool = False  # GroupDRO: draw batches with every group equally likely
    upsample_factor: int = 5  # upsample: each high-band sample appears this many times per epoch
    device: str = "cpu"

    def check(self) -> MitigationConfig:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ParameterError(f"{{methods}} must be among {', '.join(METHODS)}, got {unknown or self.methods}", "methods")
        check_counts(self.members, self.epochs)
        if self.upsample_factor < 1:
            raise ParameterError("{upsample_factor} must be at least 1", "upsample_factor")
        if not (self.lr > 0 and math.isfinite(self.lr)) or self.batch_size < 2:
            raise ParameterError("{lr} must be a positive number and {batch_size} at least 2", "lr", "batch_size")
        if not 0 <= self.seed < 2**63 - 2**20 or not (self.group_adjustment >= 0 and math.isfinite(self.group_adjustment)):
            raise ParameterError(
                "{seed} must be a whole number from 0 to 2^63 and {group_adjustment} a non-negative number", "seed", "group_adjustment"
            )
        check_device(self.device)
        if self.band_edges is not None and self.quantiles is not None:
            raise ParameterError("give {band_edges} or {quantiles}, not both", "band_edges", "quantiles")
        if self.score not in IN_BITS or self.score not in LABEL_FREE:
            raise ParameterError(
                f"{{score}} must be a label-free score in bits ({', '.join(s for s in IN_BITS if s in LABEL_FREE)}), got {self.score!r}", "score"
            )
        if self.quantiles is not None and not all(0 < q < 1 for q in self.quantiles):
            raise ParameterError("{quantiles} must lie strictly between 0 and 1", "quantiles")
        if not (self.eta >= 0 and math.isfinite(self.eta)):
            raise ParameterError("{eta} must be a non-negative number", "eta")
        return self


# ----------------------------------------------------------------------------- bands and groups
def band_edges(train_scores: np.ndarray, n_classes: int, edges: list[float] | None, quantiles: list[float] | None) -> np.ndarray:
    """Inner band edges in bits: given, at quantiles of the train scores, or the range's middle."""
    if quantiles is not None:
        return np.quantile(train_scores, sorted(quantiles))
    if edges is not None:
        top = math.log2(n_classes)
        if any(not 0 < e < top for e in edges):
            raise ParameterError(f"{{band_edges}} must lie inside (0, {top:.3f}) bits", "band_edges")
        return np.array(sorted(edges), dtype=np.float64)
    return np.array([math.log2(n_classes) / 2])


def assign_bands(scores: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Band index of each score: 0 below the first edge, ..., len(edges) at or above the last."""
    return bin_index(scores, edges)


def band_names(edges: np.ndarray) -> list[str]:
    if len(edges) == 1:
        return [f"< {edges[0]:.2f} bits", f">= {edges[0]:.2f} bits"]
    names = [f"< {edges[0]:.2f} bits"]
    names += [f"{a:.2f}-{b:.2f} bits" for a, b in zip(edges[:-1], edges[1:])]
    return names + [f">= {edges[-1]:.2f} bits"]


def groups_from_bands(bands: np.ndarray, labels: np.ndarray | None, n_classes: int, per_class: bool) -> np.ndarray:
    return bands * n_classes + labels if per_class else bands.copy()


class GroupDRO:
    """Online GroupDRO weights (Sagawa et al. 2020, algorithm 1)."""

    def __init__(self, group_counts: np.ndarray, eta: float, adjustment: float = 0.0):
        import torch

        self.eta = eta
        self.q = torch.full((len(group_counts),), 1.0 / len(group_counts), dtype=torch.float64)
        counts = torch.as_tensor(group_counts, dtype=torch.float64)
        self.adjustment = adjustment / torch.sqrt(counts.clamp_min(1.0))

    def loss(self, per_sample_loss, groups):
        """Weighted loss for a batch; updates q from the batch's per-group mean losses."""
        import torch

        n_groups = len(self.q)
        one_hot = torch.nn.functional.one_hot(groups, n_groups).to(per_sample_loss.dtype)
        counts = one_hot.sum(0)
        group_loss = (one_hot * per_sample_loss[:, None]).sum(0) / counts.clamp_min(1.0)
        adjusted = group_loss + self.adjustment.to(group_loss.dtype) * (counts > 0)
        with torch.no_grad():
            self.q = self.q * torch.exp(self.eta * adjusted.detach().double())
            self.q = self.q / self.q.sum()
        return (self.q.to(group_loss.dtype) * adjusted).sum()


# ----------------------------------------------------------------------------- one job
def _finished(path: Path, key: str) -> dict | None:
    """The result a job wrote for these settings, or None: absent, for other settings, or a file
    that is not a whole result (damaged, cut short) is trained again."""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    whole = isinstance(result, dict) and isinstance(result.get("bands"), dict) and isinstance(result.get("overall"), float | int)
    return result if whole and result.get("config_key") == key else None


def _train_jobs(jobs: list[dict], messages, threads: int) -> None:
    """Train (method, seed) jobs one after another; send each result as ("result", job, result)."""
    for job in jobs:
        messages.put(("result", job, _train_job(job, threads)))


def _train_job(job: dict, threads: int) -> dict:
    """Train one (method, seed) model with the engine; return its val predictions' errors per band.

    ERM is the plain loop; upsampling and group-balanced GroupDRO are samplers; GroupDRO is a loss.
    """
    import torch
    from torch.nn import functional as F

    torch.set_num_threads(threads)
    config = MitigationConfig(**job["config"])
    dataset = load_for_run(job["run_config"], run=job["run"])
    data = input_data(dataset, torch.device(config.device))
    train_config = TrainConfig(
        arch=config.arch, epochs=config.epochs, lr=config.lr, batch_size=config.batch_size, seed=job["seed"], device=config.device
    )
    member = make_member(0, train_config, dataset.input_shape, dataset.n_classes, len(dataset.splits["train"]), data.device)
    precision = resolve_precision(train_config)
    groups = np.asarray(job["train_groups"], dtype=np.int64)
    method = job["method"]
    sampler, loss, dro = None, None, None
    if method == "upsample":
        sampler = upsampled(np.asarray(job["train_bands"]), config.upsample_factor)
    elif method == "groupdro":
        dro = GroupDRO(np.bincount(groups, minlength=job["n_groups"]), config.eta, config.group_adjustment)
        group_of = torch.from_numpy(groups)
        loss = lambda logits, y, index: dro.loss(F.cross_entropy(logits, y, reduction="none"), group_of[index.cpu()])  # noqa: E731
        sampler = group_balanced(groups, job["n_groups"]) if config.balanced_sampling else None
    for epoch in range(1, config.epochs + 1):
        fit_epoch(
            member,
            data,
            epoch=epoch,
            batch_size=config.batch_size,
            augment=config.augment,
            precision=precision,
            sampler=sampler,
            **({"loss": loss} if loss is not None else {}),
        )
        member.epoch = epoch
    wrong = (predict(member.model, data, "val", 256, precision).argmax(1) != dataset.splits["val"].labels).astype(np.float64)
    val_bands = np.asarray(job["val_bands"])
    per_band = {int(b): float(wrong[val_bands == b].mean()) for b in np.unique(val_bands)}
    result = {"method": method, "seed": job["seed"], "overall": float(wrong.mean()), "bands": per_band}
    if dro is not None:
        result["final_group_weights"] = dro.q.tolist()
    return result


# ----------------------------------------------------------------------------- coordinator
def mitigate(run: str | Path, out: str | Path, config: MitigationConfig, *, on_done=None) -> dict:
    """Train every method with every seed (finished jobs are kept on rerun); write DIR/metrics.json."""
    config.check()
    store = RunStore.open(run)
    run_config = store.meta.get("config")
    if not run_config:
        raise InputError(f"{run} was imported; mitigation retrains models, so it needs a run made by `confusion train`")
    for split in ("train", "val"):
        if split not in store.splits:
            raise InputError(f"{run} has no {split} split")
    from .models import build_for_input

    config = replace(config, arch=config.arch or member_arch(str(store.meta.get("arch") or run_config["arch"]), 0))
    dataset = load_for_run(run_config, run=run)
    build_for_input(config.arch, dataset.input_shape, dataset.n_classes)  # unknown names fail before any job
    scores = {split: label_free_score(store, split, config.score) for split in ("train", "val")}
    for split in ("train", "val"):
        if store.sample_ids(split).tolist() != dataset.splits[split].ids.tolist():
            raise InputError(f"the {split} samples of {run} no longer match its dataset; was the data changed?")
    labels = dataset.splits["train"].labels
    edges = band_edges(scores["train"], dataset.n_classes, config.band_edges, config.quantiles)
    train_bands = assign_bands(scores["train"], edges)
    val_bands = assign_bands(scores["val"], edges)
    groups = groups_from_bands(train_bands, labels, dataset.n_classes, config.per_class_groups)
    n_groups = int((len(edges) + 1) * (dataset.n_classes if config.per_class_groups else 1))
    out = Path(out)
    (out / "jobs").mkdir(parents=True, exist_ok=True)
    seeds = [config.seed + k for k in range(config.members)]
    cores = os.cpu_count() or 1
    jobs = []
    for method in config.methods:
        for seed in seeds:
            path = out / "jobs" / f"{method}-seed{seed}.json"
            job = {
                "method": method,
                "seed": seed,
                "config": asdict(config),
                "run_config": run_config,
                "run": str(store.path),
                "train_groups": groups.tolist(),
                "train_bands": train_bands.tolist(),
                "val_bands": val_bands.tolist(),
                "n_groups": n_groups,
                "result_path": str(path),
            }
            if _finished(path, _key(config, method, seed)) is not None:
                continue
            jobs.append(job)
    workers = min(cores, len(jobs)) if config.device == "cpu" else 1
    if jobs:

        def handle(message: tuple) -> None:
            _, job, result = message
            result["config_key"] = _key(config, job["method"], job["seed"])
            write_json_atomic(job["result_path"], result)
            if on_done:
                on_done(result)

        with hold_lock(out):
            run_processes(_train_jobs, [jobs[w::workers] for w in range(workers)], max(1, cores // workers), handle)
    names = band_names(edges)
    table: dict = {}
    for method in config.methods:
        runs = [_finished(out / "jobs" / f"{method}-seed{seed}.json", _key(config, method, seed)) for seed in seeds]
        entry = {}
        for band, name in enumerate(names):
            values = [r["bands"].get(str(band), r["bands"].get(band)) for r in runs]
            values = [v for v in values if v is not None]
            entry[name] = _summary(values, int((val_bands == band).sum()))
        entry["overall"] = _summary([r["overall"] for r in runs], len(val_bands))
        table[method] = entry
    metrics = {
        "run": str(store.path),
        "bands": names,
        "band_edges_bits": edges.tolist(),
        "band_definition": f"{config.score} of each sample (bits) from "
        + str(store.path)
        + ", cut at "
        + ", ".join(f"{e:.3f}" for e in edges)
        + " bits",
        "train_band_counts": np.bincount(train_bands, minlength=len(names)).tolist(),
        "val_band_counts": np.bincount(val_bands, minlength=len(names)).tolist(),
        "groups": n_groups,
        "seeds": len(seeds),
        "config": asdict(config),
        "methods": table,
    }
    write_json_atomic(out / "metrics.json", metrics)
    return metrics


def _key(config: MitigationConfig, method: str, seed: int) -> str:
    settings = asdict(replace(config, methods=[method], members=1, seed=seed))
    return json.dumps(settings, sort_keys=True)


def _summary(values: list[float], n: int) -> dict:
    array = np.asarray(values, dtype=np.float64)
    return {
        "error_mean": float(array.mean()) if len(array) else float("nan"),
        "error_std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
        "n": n,
        "per_seed": array.tolist(),
    }
