"""The peer packages, run on the same out-of-sample predictions, side by side with this toolkit's
scores: how well each picks out other models' errors (transfer AUROC, as bench/difficulty.py).

    .venv/bin/python bench/peers.py --demo demo-output      # after `confusion demo` (full)

cleanlab (the `peers` extra) scores label quality from a model's out-of-sample predicted
probabilities and the given labels: `cleanlab.rank.get_label_quality_scores` (self-confidence,
normalized margin, confidence-weighted entropy; lower = more likely a label issue) and
`cleanlab.filter.find_label_issues` (a flag). Here they read the scoring ensemble's final
average on val, which it never trained on. They need labels, as Cartography and EL2N do;
this toolkit's label-free scores need none.

datagnosis (`--datagnosis`) scores per-sample hardness from training dynamics, but only of the
samples its own training loop fits: it cannot read a recording. So each of its plugins trains
the scoring ensemble's architecture (cnn-s on the demo) on val with val's labels, through
datagnosis' loop, and scores val: the setting these methods were written for (the hardness of
a model's own training samples), in the split's fixed order (several plugins read per-sample
values through the training loader, whose shuffling misaligns them). They read every scored
sample's label, as cleanlab does.
Each plugin trains once (minutes per plugin on 2 cores at 10,000 images and 5 epochs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from evidence import evidence, load_models, print_table

from confusion._runtime import cpu_description

METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
# datagnosis 0.0.3's plugins that run beside torch 2.14 (its `grand` fails to import there)
# data_maps, data_iq, vog, prototypicality, conf_agree and allsh read each sample's values
# through the training loader, which shuffles: their scores land on other samples (measured:
# transfer AUROC 0.50, chance). Every plugin trains in the split's fixed (class-mixed) order
# instead, which keeps them aligned.
DATAGNOSIS = (
    "data_maps",
    "data_iq",
    "el2n",
    "forgetting",
    "aum",
    "large_loss",
    "vog",
    "conf_agree",
    "prototypicality",
    "confident_learning",
    "allsh",
)


def peer_scores(store, split: str = "val") -> dict[str, np.ndarray]:
    """cleanlab's scores of every sample of `split` from the run's final ensemble average,
    oriented higher = harder (NaN where the label is unknown)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = store.labels(split)
    known = labels >= 0
    probs = np.asarray(store.final_probs(split), dtype=np.float64).mean(axis=0)
    probs /= probs.sum(axis=1, keepdims=True)
    out = {}
    for method in METHODS:
        values = np.full(len(labels), np.nan)
        values[known] = -get_label_quality_scores(labels[known], probs[known], method=method)
        out[f"cleanlab {method}"] = values
    flags = np.full(len(labels), np.nan)
    flags[known] = find_label_issues(labels[known], probs[known]).astype(np.float64)
    out["cleanlab find_label_issues"] = flags
    return out


def datagnosis_scores(
    split, n_classes: int, *, arch: str, epochs: int, workspace: Path, plugins=DATAGNOSIS, lr: float = 1e-3, batch_size: int = 128, seed: int = 0
) -> dict[str, np.ndarray]:
    """datagnosis' hardness of every sample of `split` (a `confusion.data.Split`), each plugin
    training a fresh `arch` on the split's labelled samples through datagnosis' own loop;
    oriented higher = harder (a plugin whose hard direction is "low" is negated), NaN where the
    label is unknown. data_maps and data_iq give (confidence, variability or aleatoric): their
    confidence is kept."""
    import torch
    from datagnosis.plugins import Plugins
    from datagnosis.plugins.core.datahandler import DataHandler

    from confusion.models import build_for_input

    known = np.flatnonzero(split.labels >= 0)
    x = np.asarray(split.images[known], dtype=np.float32)
    if split.images.dtype == np.uint8:  # images: standardized as the trainer does
        x /= 255.0
    x = (x - x.mean()) / max(float(x.std()), 1e-12)
    y = split.labels[known].astype(np.int64)
    loader = Plugins()
    out = {}
    for name in plugins:
        torch.manual_seed(seed)
        model = build_for_input(arch, tuple(x.shape[1:]), n_classes)
        plugin = loader.get(
            name,
            model=model,
            criterion=torch.nn.CrossEntropyLoss(),
            optimizer=torch.optim.Adam(model.parameters(), lr=lr),
            lr=lr,
            epochs=epochs,
            num_classes=n_classes,
            logging_interval=10**9,
            **({"total_samples": len(known)} if name == "forgetting" else {}),
        )
        handler = DataHandler(x, y, batch_size=batch_size)
        handler.dataloader = handler.dataloader_unshuffled
        plugin.fit(datahandler=handler, use_caches_if_exist=False, workspace=workspace / name)
        found = plugin.scores
        values = np.asarray(found[0] if isinstance(found, tuple) else found, dtype=np.float64).reshape(-1)
        if len(values) != len(known):
            raise RuntimeError(f"datagnosis {name} gave {len(values)} scores for {len(known)} samples")
        full = np.full(len(split.labels), np.nan)
        full[known] = -values if plugin.hard_direction() == "low" else values
        out[f"datagnosis {name}"] = full
    return out


def check_plugins(text: str) -> tuple[str, ...]:
    """--datagnosis: plugin names, comma-separated, or 'all'."""
    if text.strip() == "all":
        return DATAGNOSIS
    chosen = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in chosen if name not in DATAGNOSIS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"datagnosis plugins are {', '.join(DATAGNOSIS)}; got {text!r}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, required=True, help="a finished `confusion demo` output folder")
    parser.add_argument("--boot", type=int, default=200, help="bootstrap draws of the 95%% intervals (count)")
    parser.add_argument(
        "--datagnosis",
        type=check_plugins,
        default=(),
        metavar="PLUGINS",
        help=f"also run these datagnosis plugins, comma-separated ({', '.join(DATAGNOSIS)}), or 'all'; default none",
    )
    parser.add_argument("--datagnosis-epochs", type=int, default=5, help="epochs each datagnosis plugin trains (count; default 5)")
    args = parser.parse_args()
    if args.datagnosis_epochs < 1:
        parser.error("--datagnosis-epochs must be at least 1")
    if not (args.demo / "runs" / "cnn-s").is_dir():
        parser.error(f"--demo {args.demo} holds no runs/cnn-s: run `confusion demo --out {args.demo}` first")
    try:
        import cleanlab

        if args.datagnosis:
            import datagnosis  # noqa: F401
    except ModuleNotFoundError:
        sys.exit("bench/peers.py needs the peers extra: pip install -e '.[peers]'")
    from confusion.demo import FULL
    from confusion.difficulty import SCORES, difficulty_scores, hardness
    from confusion.store import RunStore
    from confusion.zoo import run_name

    started = time.perf_counter()
    store = RunStore.open(args.demo / "runs" / "cnn-s")
    paths = [args.demo / "runs" / "cnn-m", *(args.demo / "zoo" / run_name(a) for a in FULL.zoo_archs)]
    in_ref, models = load_models(store.sample_ids("val"), paths)
    table = difficulty_scores(store, "val")
    ours = ("confusion", "combined", "view_confusion", "knn_disagreement", "cartography_confidence", "margin", "el2n")
    scores = {f"this toolkit: {name}": hardness(table[name].to_numpy(), name)[in_ref] for name in ours if name in SCORES}
    scores.update({name: values[in_ref] for name, values in peer_scores(store).items()})
    if args.datagnosis:
        import tempfile

        from confusion.datasets import load_for_run

        dataset = load_for_run(store.meta["config"], run=store.path)
        split = dataset.splits["val"]
        if not np.array_equal(split.ids, store.sample_ids("val")):
            sys.exit(f"the demo's val split no longer loads as it was recorded ({store.path})")
        with tempfile.TemporaryDirectory() as workspace:
            found_dg = datagnosis_scores(
                split,
                dataset.n_classes,
                arch=store.meta["config"]["arch"],
                epochs=args.datagnosis_epochs,
                workspace=Path(workspace),
                plugins=args.datagnosis,
            )
        scores.update({name: values[in_ref] for name, values in found_dg.items()})
    found = evidence(scores, models, boot=args.boot)
    print(
        f"# peers beside this toolkit on {args.demo} (val); cleanlab {cleanlab.__version__}; CPU: {cpu_description()}; {time.perf_counter() - started:.0f} s"
    )
    print_table(found, models, "transfer AUROC for each model's errors; own_msp = each model's own 1 - max probability")


if __name__ == "__main__":
    main()
