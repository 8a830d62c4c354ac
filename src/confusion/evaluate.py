"""Evaluate any model on a hard set against its complement (and per confusion band).

A model is one of
  - a run directory: each member's final weights (from its checkpoint), or, for runs without
    weights (scikit-learn zoo models, imported predictions), the predictions the run recorded
    at its last epoch;
  - an architecture name with --weights FILE: torchvision:NAME, timm:NAME, or one of ours
    (cnn-m, resnet-s, ...), built for the data's channels and classes. Weights are loaded with
    torch.load(weights_only=True); a file may hold a state dict or {"model": state_dict}.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from .analyses import auroc, bin_index, positions
from .datasets import Dataset, Split, load_dataset, load_for_run
from .engine import checkpoint_path, input_data, member_model, predict
from .errors import InputError, ParameterError
from .runscores import score_table
from .scores import entropy
from .store import RunStore, is_run_store
from .torchfiles import load_weights_only

__all__ = [
    "Predictor",
    "build_named_model",
    "by_id",
    "dataset_for",
    "evaluate_on_hardset",
    "limit_to_scored",
    "load_predictors",
    "read_score_table",
]


@dataclass
class Predictor:
    """A named source of class probabilities for samples of a dataset split."""

    name: str
    probabilities: Callable[[str, np.ndarray], np.ndarray]  # (split, sample ids) -> (len(ids), classes)
    confident: bool = True  # its probabilities say how sure it is (not one-hot predicted labels)


def _stored_predictions(store: RunStore, member: int | None):
    def probabilities(split: str, ids: np.ndarray) -> np.ndarray:
        if split not in store.splits:
            raise InputError(f"{store.path} recorded no predictions for split {split!r}")
        rows = positions(store.sample_ids(split), ids, f"the predictions of {store.path}")
        final = store.final_probs(split)
        chosen = final if member is None else final[member : member + 1]
        return chosen.mean(axis=0)[rows]

    return probabilities


def _load_state(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"weights file {path} does not exist")
    try:
        state = load_weights_only(path)
    except Exception as error:  # unpickling refused or a damaged file: say so in one line
        raise InputError(f"{path} is not a weights file that loads with weights_only=True: {str(error).splitlines()[0]}") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    elif isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"{path} does not hold a state dict")
    return state


def build_named_model(name: str, input_shape: tuple[int, ...], n_classes: int):
    """An untrained model by name for inputs of `input_shape` (images or feature vectors)."""
    if name.startswith("timm:"):
        if len(input_shape) != 3:
            raise InputError(f"{name} needs images; this data holds feature vectors")
        channels = input_shape[0]
        try:
            import timm
        except ImportError:
            raise InputError("timm models need timm: pip install timm") from None
        try:
            return timm.create_model(name.split(":", 1)[1], pretrained=False, num_classes=n_classes, in_chans=channels)
        except RuntimeError as error:
            raise InputError(f"timm could not build {name}: {error}") from None
    from .models import build_for_input

    return build_for_input(name, tuple(input_shape), n_classes)


def _weights_predictions(models: list, dataset, normalization, device: str = "cpu", batch_size: int = 256):
    """Average probabilities of torch models over the requested samples."""
    import torch

    data = input_data(dataset, torch.device(device), normalization)
    cache: dict[str, np.ndarray] = {}

    def probabilities(split: str, ids: np.ndarray) -> np.ndarray:
        if split not in cache:
            cache[split] = np.mean([predict(m, data, split, batch_size, "fp32") for m in models], axis=0)
        return cache[split][positions(dataset.splits[split].ids, ids, f"the dataset's {split} split")]

    return probabilities


def load_predictors(
    model: str, dataset, *, weights: str | None = None, per_member: bool = False, device: str = "cpu", name: str | None = None
) -> list[Predictor]:
    """Predictors for MODEL (see the module docstring): one per member with per_member, else one.

    name: how the model is called in results (default: the run directory's name or MODEL)."""
    import torch

    from .models import is_convolutional

    shape = dataset.input_shape
    if is_run_store(model):
        if weights is not None:
            raise ParameterError("{weights} goes with an architecture name, not a run directory", "weights")
        store = RunStore.open(model)
        label = name or Path(model).name
        config = store.meta.get("config") or {}
        arch = store.meta.get("arch")
        checkpoints = [checkpoint_path(Path(model), m) for m in range(store.n_members)]
        if not (arch and all(p.exists() for p in checkpoints) and config.get("arch")):
            members = range(store.n_members) if per_member else [None]
            return [Predictor(label if m is None else f"{label} member {m}", _stored_predictions(store, m)) for m in members]
        if store.n_classes != dataset.n_classes:
            raise InputError(f"{model} predicts {store.n_classes} classes; the dataset has {dataset.n_classes}")
        normalization = store.meta.get("normalization")
        normalization = (normalization["mean"], normalization["std"]) if normalization else None
        networks = []
        settings = SimpleNamespace(arch=config.get("arch") or arch, seed=int(config.get("seed", 0)), feature_subset=config.get("feature_subset"))
        for m, path in enumerate(checkpoints):
            network = member_model(settings, m, shape, store.n_classes)
            try:
                network.load_state_dict(_load_state(path))
            except RuntimeError as error:
                raise InputError(f"{path} does not fit {arch}: {str(error).splitlines()[0][:160]}") from None
            if is_convolutional(network):
                network = network.to(memory_format=torch.channels_last)
            networks.append(network.to(device))
        if per_member:
            return [Predictor(f"{label} member {m}", _weights_predictions([n], dataset, normalization, device)) for m, n in enumerate(networks)]
        return [Predictor(label, _weights_predictions(networks, dataset, normalization, device))]
    if Path(model).exists() and Path(model).is_dir():
        raise InputError(f"{model} is a directory but not a run store")
    if weights is None:
        raise ParameterError(f"{model!r} is not a run directory; give an architecture name with {{weights}} FILE", "weights")
    network = build_named_model(model, shape, dataset.n_classes)
    try:
        network.load_state_dict(_load_state(weights))
    except RuntimeError as error:
        described = f"{shape[0]}-channel {shape[1]}px images" if len(shape) == 3 else f"{shape[0]} features"
        raise InputError(f"{weights} does not fit {model} for {described} and {dataset.n_classes} classes: {str(error).splitlines()[0]}") from None
    return [Predictor(name or model, _weights_predictions([network.to(device)], dataset, None, device))]


def by_id(model: str, hard: pd.DataFrame, scores: str | Path | None, name: str | None = None) -> tuple[list[Predictor], Dataset]:
    """Predictions of any model joined by sample id to the labels a run holds: no dataset needed.

    model: a run store (its last epoch's predictions, members averaged), or a table (.csv or
    .parquet) with a `sample` column and either `predicted` (class index or name) or one
    probability column per class, named by the class names. The labels come from `scores`
    when it is a run store whose split is labelled (the scoring run), else from the model's
    own run. Only samples that have both a prediction and a label are counted.
    """
    split = str(hard["split"].iloc[0]) if len(hard) else "val"
    runs = [RunStore.open(s) for s in (scores, model) if s is not None and is_run_store(s)]
    holder = next((run for run in runs if split in run.splits and run.meta["splits"][split]["labelled"]), None)
    if holder is None:
        raise ParameterError(
            f"{{data}} is needed, or {{scores}} RUN whose {split!r} split has labels: predictions are joined to them by sample id", "data", "scores"
        )
    ids, labels, classes = holder.sample_ids(split), holder.labels(split), holder.classes
    if is_run_store(model):
        store = RunStore.open(model)
        if split not in store.splits:
            raise InputError(f"{model} recorded no predictions for split {split!r}")
        predicted_ids, probabilities = store.sample_ids(split), store.final_probs(split).mean(axis=0)
        if store.classes != list(classes):  # joined by class name, never by index
            if sorted(store.classes) != sorted(classes):
                raise InputError(
                    f"{model} predicts the classes {', '.join(store.classes[:6])}; the labels of {holder.path} are of "
                    f"{', '.join(classes[:6])}: a model is evaluated on the classes it predicts"
                )
            probabilities = probabilities[:, [store.classes.index(name) for name in classes]]
        confident = True
    else:
        predicted_ids, probabilities, confident = _predictions_table(Path(model), classes)
    named = pd.Series(predicted_ids)
    repeated = named[named.duplicated()]
    if len(repeated):
        raise InputError(f"{model} names a sample twice ({repeated.iloc[0]!r})")
    keep = np.flatnonzero((labels >= 0) & np.isin(ids, predicted_ids))
    rows = positions(predicted_ids, ids[keep], f"the predictions of {model}")
    dataset = Dataset(
        name="labels by id",
        classes=list(classes),
        splits={split: Split(np.zeros((len(keep), 1, 1, 1), np.uint8), labels[keep], ids[keep])},
        flip_preserves_label=False,
    )
    chosen = probabilities[rows]
    label = name or Path(model).stem
    return [Predictor(label, lambda _split, wanted: chosen[positions(ids[keep], wanted, "the labelled predictions")], confident)], dataset


def _predictions_table(path: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray, bool]:
    """(sample ids, (samples, classes) probabilities, whether they are probabilities rather than
    one-hot predicted labels) from a predictions table."""
    if not path.is_file() or path.suffix.lower() not in (".csv", ".parquet"):
        raise InputError(f"{path} is neither a run directory nor a predictions table (.csv or .parquet)")
    try:
        table = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path, dtype={"sample": str})
    except (ValueError, OSError) as error:
        raise InputError(f"{path} is not a readable table: {str(error).splitlines()[0]}") from None
    if "sample" not in table.columns:
        raise InputError(f"{path} needs a 'sample' column of sample ids")
    ids = table["sample"].astype(str).to_numpy()
    if set(classes) <= set(map(str, table.columns)):
        return ids, table[list(classes)].to_numpy(np.float64), True
    if "predicted" in table.columns:
        index = {name: k for k, name in enumerate(classes)}
        values = table["predicted"].astype(str).to_numpy()
        predicted = np.array([index[v] if v in index else int(v) if v.lstrip("-").isdigit() else -1 for v in values])
        if ((predicted < 0) | (predicted >= len(classes))).any():
            raise InputError(f"{path}: 'predicted' holds values that are neither class indices 0..{len(classes) - 1} nor class names")
        return ids, np.eye(len(classes))[predicted], False
    raise InputError(f"{path} needs a 'predicted' column or one probability column per class ({', '.join(classes[:5])}...)")


def dataset_for(model: str, data: str | None, root=None):
    """The dataset to evaluate on: `data` by name, else the one the run `model` was trained on."""
    if data is not None:
        return load_dataset(data, root=root)
    if is_run_store(model) and RunStore.open(model).meta.get("config"):
        return load_for_run(RunStore.open(model).meta["config"], run=model)
    raise ParameterError("{data} is needed: the model is not a run that remembers its dataset", "data")


def limit_to_scored(dataset, hard: pd.DataFrame, scores: pd.DataFrame) -> None:
    """Keep, in the hard set's split, only the samples the score table scored (the complement
    is then the scored samples outside the hard set)."""
    split = hard["split"].iloc[0] if len(hard) else "val"
    scored = scores.loc[scores["split"].astype(str) == split, "sample"].astype(str) if "split" in scores else scores["sample"].astype(str)
    if split in dataset.splits and len(scored):
        keep = np.flatnonzero(np.isin(dataset.splits[split].ids, scored.to_numpy()))
        dataset.splits[split] = dataset.splits[split].subset(keep)


def read_score_table(path: str | Path) -> pd.DataFrame:
    """A `confusion score` table (or a run directory's scores), with `confusion` in bits.

    The table's `unit` column says what its scores are in; nats are converted to bits, and a
    table that does not say (or says something else) is refused rather than binned in a unit
    it may not be in.
    """
    path = Path(path)
    if is_run_store(path):
        return score_table(RunStore.open(path))
    if not path.is_file():
        raise ParameterError(f"{{scores}} {path} is neither a run directory nor a scores file", "scores")
    try:
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={"sample": str})
    except (ValueError, OSError) as error:
        raise ParameterError(f"{{scores}} {path} is not a readable table: {str(error).splitlines()[0]}", "scores") from None
    missing = [c for c in ("sample", "confusion", "unit") if c not in table.columns]
    if missing:
        raise ParameterError(f"{{scores}} {path} lacks the columns {missing}; write it with `confusion score` (it names its unit)", "scores")
    units = set(table["unit"].astype(str))
    if units == {"nats"}:
        table = table.copy()
        for column in ("confusion", "expected_entropy", "disagreement"):
            if column in table:
                table[column] = table[column] / math.log(2)
        table["unit"] = "bits"
    elif units != {"bits"}:
        raise ParameterError(f"{{scores}} {path} has scores in {sorted(units)}; expected bits or nats", "scores")
    return table


def evaluate_on_hardset(
    predictors: list[Predictor], dataset, hard: pd.DataFrame, *, scores: pd.DataFrame | None = None, bins: int = 10
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Top-1 error on the hard set, on its complement and overall (same split), per model;
    with `scores` (a `confusion score` table of that split) also per fixed-width confusion band,
    and the AUROC of the confusion score for the model's errors next to the AUROC of the
    model's own 1 - max probability and entropy (columns auroc_confusion, auroc_own_msp,
    auroc_own_entropy)."""
    splits = hard["split"].unique().tolist()
    if len(splits) != 1:
        raise InputError(f"a hard set should come from one split; this one spans {splits}")
    split = splits[0]
    if split not in dataset.splits:
        raise InputError(f"the dataset has no split {split!r}")
    every = dataset.splits[split]
    if (every.labels < 0).any():
        raise InputError(f"split {split!r} has no labels, so errors cannot be counted there (the hard set itself needed none)")
    in_hard = np.isin(every.ids, hard["sample"].to_numpy(str))
    if in_hard.sum() != len(hard):
        raise InputError("some hard-set samples are not in the dataset's split; was it made from this dataset?")
    rows, band_rows = [], []
    band_of = None
    if scores is not None:
        part = scores[scores["split"].astype(str) == split] if "split" in scores else scores
        by_id = dict(zip(part["sample"].astype(str), part["confusion"]))
        if not all(s in by_id for s in every.ids):
            raise ParameterError("{scores} does not cover every sample of the split", "scores")
        values = np.array([by_id[s] for s in every.ids])
        top = math.log2(dataset.n_classes)
        edges = np.linspace(0, top, bins + 1)
        band_of = bin_index(values, edges[1:-1])
    for predictor in predictors:
        probs = predictor.probabilities(split, every.ids)
        wrong = probs.argmax(axis=1) != every.labels
        hard_error, rest_error = float(wrong[in_hard].mean()), float(wrong[~in_hard].mean()) if (~in_hard).any() else float("nan")
        rows.append(
            {
                "model": predictor.name,
                "split": split,
                "hard_n": int(in_hard.sum()),
                "hard_error": hard_error,
                "rest_n": int((~in_hard).sum()),
                "rest_error": rest_error,
                "overall_error": float(wrong.mean()),
                "hard_to_rest": hard_error / rest_error if rest_error > 0 else float("inf"),
            }
        )
        if band_of is not None:
            # How well the score ranks this model's errors, next to the model's own confidence.
            rows[-1]["auroc_confusion"] = auroc(values, wrong)
            # A table of predicted labels has no confidence of its own: nothing to rank by.
            rows[-1]["auroc_own_msp"] = auroc(1.0 - probs.max(axis=1), wrong) if predictor.confident else float("nan")
            rows[-1]["auroc_own_entropy"] = auroc(entropy(probs), wrong) if predictor.confident else float("nan")
            for band in range(bins):
                in_band = band_of == band
                if in_band.any():
                    band_rows.append(
                        {
                            "model": predictor.name,
                            "band_low": float(edges[band]),
                            "band_high": float(edges[band + 1]),
                            "n": int(in_band.sum()),
                            "error": float(wrong[in_band].mean()),
                        }
                    )
    return pd.DataFrame(rows), (pd.DataFrame(band_rows) if band_of is not None else None)
