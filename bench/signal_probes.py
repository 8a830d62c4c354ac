"""Levers of the label-free signal that were tried and not kept: more test-time views, and other
statistics of the members' embedding neighbourhoods. Evidence for the README's "what does not".

    .venv/bin/python bench/signal_probes.py --demo demo-output       # a finished full demo (images)

On the demo's scoring run (cnn-s, 3 seeds) and its 9 other models, as `bench/difficulty.py`:

- **views**: each member's last checkpoint predicts the val images under 21 views (the 5
  defaults: a flip and 2-pixel shifts; 1-pixel shifts; 2-pixel diagonal shifts; the flip shifted
  by 2 pixels; +-10 degree rotations and +-10% zoom), in the run's own precision. view_confusion
  of each set of views, alone and in the rank average with confusion and knn_disagreement.
- **neighbourhoods**: in each member's stored embeddings at the last epoch, the entropy of the
  labels of the k nearest training samples (local class overlap, k = 15 and 50) and the mean
  confusion of those training samples (a smoothed confusion), alone and rank-averaged.

Prints one evidence table (mean transfer AUROC with a 95% bootstrap interval, models whose own
confidence each beats). Nothing here reads the label of a scored sample.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from evidence import evidence, load_models, print_table, rank_average

from confusion._runtime import cpu_description

VIEW_SETS = {
    "the 5 defaults": (),
    "5 + 1-pixel shifts": ("left1", "right1", "up1", "down1"),
    "5 + diagonal shifts": ("up-left", "up-right", "down-left", "down-right"),
    "5 + flip shifted": ("flip-left", "flip-right", "flip-up", "flip-down"),
    "5 + rotations and zoom": ("rotate+10", "rotate-10", "zoom+10%", "zoom-10%"),
}


def shifted(x, dx: int, dy: int):
    """`x` moved by (dx, dy) pixels, zero fill."""
    import torch

    out = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    if dy:
        out[..., slice(None, dy) if dy > 0 else slice(dy, None), :] = 0
    if dx:
        out[..., :, slice(None, dx) if dx > 0 else slice(dx, None)] = 0
    return out


def warped(x, degrees: float = 0.0, scale: float = 1.0):
    """`x` rotated by `degrees` and zoomed by `scale` about its centre, zero fill."""
    import torch

    a = np.deg2rad(degrees)
    theta = torch.tensor([[np.cos(a) / scale, -np.sin(a) / scale, 0.0], [np.sin(a) / scale, np.cos(a) / scale, 0.0]], dtype=x.dtype)
    grid = torch.nn.functional.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


EXTRA_VIEWS = {
    "left1": lambda x: shifted(x, -1, 0),
    "right1": lambda x: shifted(x, 1, 0),
    "up1": lambda x: shifted(x, 0, -1),
    "down1": lambda x: shifted(x, 0, 1),
    "up-left": lambda x: shifted(x, -2, -2),
    "up-right": lambda x: shifted(x, 2, -2),
    "down-left": lambda x: shifted(x, -2, 2),
    "down-right": lambda x: shifted(x, 2, 2),
    "flip-left": lambda x: shifted(x.flip(-1), -2, 0),
    "flip-right": lambda x: shifted(x.flip(-1), 2, 0),
    "flip-up": lambda x: shifted(x.flip(-1), 0, -2),
    "flip-down": lambda x: shifted(x.flip(-1), 0, 2),
    "rotate+10": lambda x: warped(x, 10.0),
    "rotate-10": lambda x: warped(x, -10.0),
    "zoom+10%": lambda x: warped(x, scale=1.1),
    "zoom-10%": lambda x: warped(x, scale=0.9),
}


def view_probabilities(run: Path, store) -> tuple[tuple[str, ...], np.ndarray]:
    """(view names, (members, val samples, views, classes) probabilities) from the checkpoints."""
    import torch

    from confusion import engine
    from confusion.datasets import load_for_run
    from confusion.engine import checkpoint_path, input_data, member_model, predict
    from confusion.torchfiles import load_weights_only

    config = store.meta["config"]
    dataset = load_for_run(config, run=run)
    if (np.asarray(dataset.splits["val"].ids).astype(str) != store.sample_ids("val").astype(str)).any():
        raise SystemExit(f"{run}: the dataset's val samples are not the run's")
    normalization = store.meta["normalization"]
    data = input_data(dataset, torch.device("cpu"), (normalization["mean"], normalization["std"]))
    plain_view = engine.view_of
    engine.view_of = lambda x, name, pad=2: EXTRA_VIEWS[name](x) if name in EXTRA_VIEWS else plain_view(x, name, pad)
    names = (*engine.VIEWS, *EXTRA_VIEWS)
    settings = SimpleNamespace(arch=config["arch"], seed=int(config.get("seed", 0)), feature_subset=config.get("feature_subset"))
    precision = engine.resolve_precision(SimpleNamespace(precision=config.get("precision", "auto"), device="cpu"))  # as the run recorded
    members = []
    try:
        for member in range(store.n_members):
            network = member_model(settings, member, dataset.input_shape, store.n_classes)
            network.load_state_dict(load_weights_only(checkpoint_path(run, member))["model"])
            _, _, views = predict(network.to(memory_format=torch.channels_last), data, "val", 512, precision, views=names)
            members.append(views)
    finally:
        engine.view_of = plain_view
    return names, np.stack(members)


def label_statistics(
    index: np.ndarray, labels: np.ndarray, train_confusion: np.ndarray, ks: tuple[int, ...], n_classes: int
) -> dict[str, np.ndarray]:
    """Per k, from each query's nearest training samples (`index`, nearest first): the entropy of
    their labels (nats) and their mean confusion."""
    out = {}
    for k in ks:
        shares = np.stack([(labels[index[:, :k]] == c).mean(axis=1) for c in range(n_classes)], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"label entropy of the {k} nearest"] = -np.where(shares > 0, shares * np.log(shares), 0.0).sum(axis=1)
        out[f"mean confusion of the {k} nearest"] = train_confusion[index[:, :k]].mean(axis=1)
    return out


def embedding_statistics(store, ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    """`label_statistics` of the val samples in each member's stored embeddings, member average."""
    from sklearn.neighbors import NearestNeighbors

    from confusion.runscores import score_run

    epoch = store.embedding_epochs(["train", "val"])[-1]
    labels, train_confusion = store.labels("train"), score_run(store, "train").confusion
    out: dict[str, np.ndarray] = {}
    for member in range(store.n_members):
        reference = np.asarray(store.embeddings("train", member, epoch), dtype=np.float32)
        queries = np.asarray(store.embeddings("val", member, epoch), dtype=np.float32)
        _, index = NearestNeighbors(n_neighbors=max(ks), algorithm="brute").fit(reference).kneighbors(queries)
        for name, values in label_statistics(index, labels, train_confusion, ks, store.n_classes).items():
            out[name] = out.get(name, 0.0) + values / store.n_members
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, required=True, help="a finished full `confusion demo` output folder (images)")
    parser.add_argument("--boot", type=int, default=100, help="bootstrap draws of the 95%% intervals (count)")
    args = parser.parse_args()
    from confusion.demo import FULL
    from confusion.difficulty import difficulty_scores, hardness
    from confusion.scores import entropy
    from confusion.store import RunStore
    from confusion.zoo import run_name

    started = time.perf_counter()
    run = args.demo / "runs" / "cnn-s"
    store = RunStore.open(run)
    table = difficulty_scores(store, "val")
    in_ref, models = load_models(store.sample_ids("val"), [args.demo / "runs" / "cnn-m"] + [args.demo / "zoo" / run_name(a) for a in FULL.zoo_archs])
    scores = {name: hardness(table[name].to_numpy(), name)[in_ref] for name in ("confusion", "knn_disagreement", "view_confusion", "combined")}
    base = (scores["confusion"], scores["knn_disagreement"])
    names, views = view_probabilities(run, store)
    for label, extra in VIEW_SETS.items():
        chosen = [names.index(v) for v in (*names[:5], *extra)]
        average = views[:, :, chosen].astype(np.float64).mean(axis=(0, 2))
        value = entropy(average / average.sum(axis=1, keepdims=True), base=2.0)[in_ref]
        scores[f"view_confusion, {label} ({len(chosen)} views)"] = value
        scores[f"rank average of confusion, knn_disagreement and view_confusion of {label}"] = rank_average(*base, value)
    everything = views.astype(np.float64).mean(axis=(0, 2))
    scores[f"view_confusion, all {len(names)} views"] = entropy(everything / everything.sum(axis=1, keepdims=True), base=2.0)[in_ref]
    for name, value in embedding_statistics(store, (15, 50)).items():
        scores[name] = value[in_ref]
        scores[f"rank average of confusion, view_confusion and {name}"] = rank_average(scores["confusion"], scores["view_confusion"], value[in_ref])
    found = evidence(scores, models, boot=args.boot)
    print(f"# signal probes on {run}; CPU: {cpu_description()}; {time.perf_counter() - started:.0f} s")
    print_table(found, models, "transfer AUROC for each model's errors; own_msp = each model's own 1 - max probability")


if __name__ == "__main__":
    main()
