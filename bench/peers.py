"""The peer packages, run on the same out-of-sample predictions, side by side with this toolkit's
scores: how well each picks out other models' errors (transfer AUROC, as bench/difficulty.py).

    .venv/bin/python bench/peers.py --demo demo-output      # after `confusion demo` (full)

cleanlab (the `peers` extra) scores label quality from a model's out-of-sample predicted
probabilities and the given labels: `cleanlab.rank.get_label_quality_scores` (self-confidence,
normalized margin, confidence-weighted entropy; lower = more likely a label issue) and
`cleanlab.filter.find_label_issues` (a flag). Here they read the scoring ensemble's final
average on val, which it never trained on. They need labels, as Cartography and EL2N do;
this toolkit's label-free scores need none. datagnosis (also a per-sample hardness package)
trains its own model through its own loop and cannot read a recording; it is not run here.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, required=True, help="a finished `confusion demo` output folder")
    parser.add_argument("--boot", type=int, default=200, help="bootstrap draws of the 95%% intervals (count)")
    args = parser.parse_args()
    try:
        import cleanlab
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
    found = evidence(scores, models, boot=args.boot)
    print(
        f"# peers beside this toolkit on {args.demo} (val); cleanlab {cleanlab.__version__}; CPU: {cpu_description()}; {time.perf_counter() - started:.0f} s"
    )
    print_table(found, models, "transfer AUROC for each model's errors; own_msp = each model's own 1 - max probability")


if __name__ == "__main__":
    main()
