"""The commands that read runs: score, import, difficulty, combine, status, report and hardset."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .. import _terminal as term
from .._files import check_replaceable_folder, write_table_atomic
from ..cluster import check_spec as check_dask_spec
from ..cluster import dask_client
from ..errors import InputError
from .common import KEEP_HELP, Base, app, check_output_folder, handles_errors, table_path, with_metadata

if TYPE_CHECKING:
    from ..store import RunStore

__all__ = [
    "difficulty",
    "hardset",
    "import_",
    "report",
    "score",
    "status",
]


def _print_score_summary(table, unit: str) -> None:
    rows = []
    for split, part in table.groupby("split", sort=False):
        scores = part["confusion"]
        row = [split, len(part), float(scores.mean()), float(scores.median()), float(scores.quantile(0.9)), float(scores.max())]
        rows.append(row)
    term.table(f"confusion ({unit})", ["split", "samples", "mean", "median", "90th pct", "max"], rows)
    if "bound_width" in table:  # top-k logs: the point estimates above lie within guaranteed bounds
        widths = [[split, float(part["bound_width"].mean()), float(part["bound_width"].max())] for split, part in table.groupby("split", sort=False)]
        term.table(f"top-k logs: width of the guaranteed bounds on confusion ({unit})", ["split", "mean width", "max width"], widths)


# --------------------------------------------------------------------------- score
@app.command()
@handles_errors
def score(
    run: Annotated[Path | None, typer.Argument(help="Run directory (from `train` or `import`). Omit when using --probs.")] = None,
    probs: Annotated[
        Path | None, typer.Option(help="Score an array file directly: .npy/.npz shaped (members, epochs, samples, classes) or (samples, classes).")
    ] = None,
    logits: Annotated[bool, typer.Option(help="The --probs file holds logits; apply a softmax over classes first.")] = False,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="With --probs: .npy of (samples,) class indices (-1 = unknown), copied to the output. Never used for the score. Default: the 'labels' array of a --probs .npz that holds one."
        ),
    ] = None,
    split: Annotated[list[str] | None, typer.Option(help="With RUN: score only this split (repeatable). Default: every split.")] = None,
    base: Annotated[Base, typer.Option(help="Logarithm base: 2 gives bits (default), e gives nats.")] = Base.bits,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write one row per sample to this .csv or .parquet file (columns: sample, split, confusion, confusion_normalized, expected_entropy, disagreement, label; from top-k logs also confusion_low, confusion_high and bound_width, the guaranteed bounds, in the same unit)."
        ),
    ] = None,
    engine: Annotated[str, typer.Option(help="auto (fused numba kernel when it applies), numpy, or numba.")] = "auto",
    with_meta: Annotated[
        bool,
        typer.Option(
            help="With RUN and --out: add the run's per-sample metadata columns (a document's text, columns given to import --meta, source files)."
        ),
    ] = False,
    dask: Annotated[
        str | None,
        typer.Option(
            help="With RUN: score on a Dask cluster, block by block of samples, with the same numbers: a scheduler address (tcp://HOST:PORT; its workers must reach the run directory) or local:N (a local cluster of N worker processes). Needs the dask extra."
        ),
    ] = None,
):
    """Confusion score of every sample (the paper's equations 1-3): higher = harder, in [0, log C] bits (or nats)."""
    from ..importing import archive_labels, load_labels, load_predictions
    from ..runscores import score_table
    from ..scores import as_four_d, confusion_scores
    from ..store import RunStore

    out = table_path(out)
    if (run is None) == (probs is None):
        raise InputError("give either a run directory or --probs FILE, not both or neither")
    if engine not in ("auto", "numpy", "numba"):
        raise InputError(f"--engine must be auto, numpy or numba, got {engine!r}")
    if with_meta and (run is None or out is None):
        raise InputError("--with-meta adds a run's metadata columns to the --out table: it goes with RUN and --out")
    if dask is not None:
        if run is None:
            raise InputError("--dask scores a run directory: it goes with RUN, not --probs")
        check_dask_spec(dask)
    if run is not None:
        if logits or labels is not None:
            raise InputError("--logits and --labels go with --probs; a run store already holds probabilities and labels")
        store = RunStore.open(run)
        chosen = store.chosen_splits(split)
        total = sum(store.n_samples(s) for s in chosen)
        with dask_client(dask) if dask is not None else contextlib.nullcontext() as client:
            with term.progress_bar(total, "scoring", "samples") as advance:
                table = score_table(store, chosen, base=base.value, progress=advance, client=client)
        if with_meta:
            table = with_metadata(table, store, chosen)
    else:
        array = load_predictions(probs)
        n_samples, n_classes = as_four_d(tuple(array.shape))[2:]
        if labels is None:
            labels = archive_labels(probs)
        label_array = load_labels(labels, n_samples, n_classes) if labels is not None else None
        with term.progress_bar(n_samples, "scoring", "samples") as advance:
            result = confusion_scores(array, base=base.value, logits=logits, engine=engine, progress=advance)
        table = result.to_frame(labels=label_array, split=split[0] if split else "all")
    unit = "bits" if base is Base.bits else "nats"
    if out is not None:
        write_table_atomic(table, out)
        term.info(f"wrote {len(table)} rows to {out}")
    _print_score_summary(table, unit)


# --------------------------------------------------------------------------- import
@app.command("import")
@handles_errors
def import_(
    out: Annotated[Path, typer.Option(help="Run directory to create, or an existing run store to add the split (or the metadata) to.")],
    probs: Annotated[
        str | None,
        typer.Option(
            help="Predictions: .npy/.npz or a torch file .pt/.pth (a tensor or a dict of tensors, loaded weights-only) shaped (members, epochs, samples, classes) or (samples, classes), or a pattern like 'preds/m{member}_e{epoch}.npy' (one (samples, classes) file each). Omit it to give an existing run's split --meta only."
        ),
    ] = None,
    logits: Annotated[bool, typer.Option(help="The file holds logits; a softmax over classes is applied before storing.")] = False,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="(samples,) labels: .npy/.npz/.pt of class indices (-1 = unknown), or a text file with one label per line, as indices or class names (names map through --classes, or the run's classes). Default: the 'labels' array of a --probs .npz that holds one."
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            help="Name of the split these predictions are for. Default: train, val or test when the file name says so, else val (the output says which)."
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace the split if the run already has one of that name (the old one stays until the new one is written).")
    ] = False,
    ids: Annotated[Path | None, typer.Option(help="Text file with one sample id per line (default: 0..N-1).")] = None,
    classes: Annotated[str | None, typer.Option(help="Comma-separated class names (default: 0..C-1).")] = None,
    meta: Annotated[
        Path | None,
        typer.Option(
            help="Per-sample metadata: a .csv/.parquet table with a 'sample' (or 'id') column and any others (a 'text' column holds documents), joined by sample id; kept in the run and carried into hard-set manifests, `score --with-meta` and the report's examples."
        ),
    ] = None,
    keep: Annotated[
        str | None, typer.Option(help=KEEP_HELP + " Default: raw for a new run; a split added to a run is kept as the run keeps its others.")
    ] = None,
    topk: Annotated[
        Path | None,
        typer.Option(
            help="Top-k logs instead of --probs: an .npz holding 'values' (the k largest probabilities of each prediction, not renormalised: 1 - their sum is the mass left out) and 'indices' (their classes), each shaped (members, epochs, samples, k) or (samples, k), and optionally 'n_classes'. Makes a new run whose scores carry guaranteed lower and upper bounds (score: confusion_low, confusion_high, bound_width; hardset: which selected samples are certain)."
        ),
    ] = None,
    n_classes: Annotated[
        int | None, typer.Option(help="With --topk: the number of classes C (or give --classes, or 'n_classes' in the .npz).")
    ] = None,
    logprobs: Annotated[bool, typer.Option(help="With --topk: the values are log-probabilities (natural log), as model APIs return them.")] = False,
):
    """Turn predictions made by any framework into a run store (float16, chunked along samples)."""
    from ..importing import attach_metadata, import_predictions, split_from_name
    from ..store import RunStore, is_run_store

    class_names = [c.strip() for c in classes.split(",")] if classes else None
    if topk is not None:
        _import_topk(out, topk, probs, logits, labels, split, overwrite, ids, class_names, meta, keep, n_classes, logprobs)
        return
    for name, value in (("--n-classes", n_classes is not None), ("--logprobs", logprobs)):
        if value:
            raise InputError(f"{name} goes with --topk")
    if probs is None:
        if meta is None:
            raise InputError("give --probs FILE (predictions to import), or --meta FILE to attach metadata to an existing run")
        if not is_run_store(out):
            raise InputError(f"{out} is not a run store: --meta without --probs attaches metadata to an existing run")
        for name, value in (
            ("--logits", logits),
            ("--labels", labels),
            ("--ids", ids),
            ("--classes", classes),
            ("--overwrite", overwrite),
            ("--keep", keep),
        ):
            if value:
                raise InputError(f"{name} goes with --probs")
        split = split or "val"
        matched = attach_metadata(out, split, meta)
        term.info(f"attached the columns of {meta} to {matched} of {RunStore.open(out).n_samples(split)} {split} samples of {out}")
        return
    sample_ids = _read_ids(ids)
    split, why = split_from_name(probs, split)
    slices = _slices(probs)
    with term.progress_bar(slices, "import", "member-epochs") if slices else contextlib.nullcontext(None) as advance:
        store = import_predictions(
            probs,
            out,
            logits=logits,
            labels=labels,
            split=split,
            sample_ids=sample_ids,
            classes=class_names,
            overwrite=overwrite,
            meta=meta,
            keep=keep,
            progress=advance,
        )
    term.info(
        f"imported split {split!r} ({why}): {store.n_members} members x {len(store.recorded_epochs)} epochs x "
        f"{store.n_samples(split)} samples x {store.n_classes} classes into {out}"
        + (f", with the metadata columns of {meta}" if meta is not None else "")
    )


def _slices(probs: Path) -> int | None:
    """How many (member, epoch) slices an import of `probs` copies, for its progress, where the
    shape costs no read of the data: a .npy file's header (memory-mapped) or a file pattern.
    None for .npz and torch files, which the import itself reads whole (reading them here too
    would read them twice: their import prints no progress lines), and for a file that cannot
    be read (the import then says why)."""
    from ..importing import TORCH_SUFFIXES, load_predictions
    from ..scores import as_four_d

    if Path(str(probs)).suffix.lower() in (".npz", *TORCH_SUFFIXES):
        return None
    try:
        n_members, n_epochs, *_ = as_four_d(tuple(load_predictions(probs).shape))
    except (InputError, ValueError, OSError):
        return None
    return n_members * n_epochs


def _read_ids(ids: Path | None) -> list[str] | None:
    if ids is None:
        return None
    if not ids.is_file():
        raise InputError(f"ids file {ids} does not exist")
    try:
        text = ids.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"ids file {ids} is not UTF-8 text (one sample id per line)") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _import_topk(out, topk, probs, logits, labels, split, overwrite, ids, class_names, meta, keep, n_classes, logprobs) -> None:
    from ..importing import import_topk, split_from_name

    for name, value in (("--probs", probs), ("--logits", logits), ("--overwrite", overwrite), ("--meta", meta), ("--keep", keep)):
        if value:
            raise InputError(f"{name} does not go with --topk" + (" (log-probabilities: --logprobs)" if name == "--logits" else ""))
    if n_classes is not None and n_classes < 1:
        raise InputError(f"--n-classes must be at least 1, got {n_classes}")
    split, why = split_from_name(topk, split)
    store = import_topk(topk, out, n_classes=n_classes, logprobs=logprobs, labels=labels, split=split, sample_ids=_read_ids(ids), classes=class_names)
    term.info(
        f"imported top-{store.meta['topk']} logs as split {split!r} ({why}): {store.n_members} members x {len(store.recorded_epochs)} epochs x "
        f"{store.n_samples(split)} samples x {store.n_classes} classes into {out}; scores carry guaranteed bounds"
    )


# --------------------------------------------------------------------------- difficulty
@app.command()
@handles_errors
def difficulty(
    run: Annotated[Path, typer.Argument(help="Run directory (from `train`, `import` or a Recorder).")],
    out: Annotated[Path, typer.Option(help="Table to write (.csv or .parquet): sample, split, label (-1 = unknown), then one column per score.")],
    split: Annotated[list[str] | None, typer.Option(help="Only this split (repeatable). Default: every split.")] = None,
    k: Annotated[
        int, typer.Option(help="Neighbours (training samples) of knn_disagreement and untrust, 1 to 1000 (a --keep reduced run keeps k = 15 only).")
    ] = 15,
):
    """Many difficulty scores from one recording, one column each (higher = harder unless noted):
    confusion, expected_entropy, disagreement, last_epoch_entropy, member_entropy, single_model_entropy
    (bits, 0..log2 C); ensemble_msp (1 - max probability, 0..1); flips (count); stable_epoch (training
    epoch); needing labels (empty where the label is unknown): cartography_confidence (lower = harder)
    and cartography_variability (probability), forgetting_events (count), margin (probability, -1..1,
    lower = harder), el2n (L2 norm, 0..1.41); from the members' embeddings and the training labels
    (empty without embeddings): knn_disagreement (share of the k nearest training samples labelled
    otherwise than predicted, 0..1) and untrust (distance ratio, 0..1); from test-time views at the last
    epoch (empty without them): view_disagreement (share of member x view predictions that differ from the
    plain one, 0..1) and view_confusion (bits); and combined (log-odds of an error), a logistic regression
    over the label-free scores fitted on the labels of val, cross-fitted so no val sample is scored by a fit
    that saw it (`confusion combine` fits it another way)."""
    import pandas as pd

    from ..difficulty import SCORES, difficulty_scores
    from ..neighbours import check_k, check_kept_k
    from ..store import RunStore

    table_path(out)
    check_k(k)
    store = RunStore.open(run)
    check_kept_k(store, k)
    chosen = store.chosen_splits(split)
    with term.progress_bar(sum(store.n_samples(s) for s in chosen), "difficulty", "samples") as advance:
        tables = [difficulty_scores(store, name, k=k, progress=advance) for name in chosen]
    table = pd.concat(tables, ignore_index=True)
    write_table_atomic(table, out)
    term.info(f"wrote {len(table)} rows x {len(SCORES)} scores to {out}")
    rows = [
        [name, info.unit, info.harder, "yes" if info.needs_labels else "no", float(table[name].mean()), int(table[name].notna().sum())]
        for name, info in SCORES.items()
    ]
    term.table("difficulty scores", ["score", "unit", "harder is", "needs labels", "mean", "samples with a value"], rows)
    for note in dict.fromkeys(note for t in tables for note in t.attrs.get("notes", [])):
        term.info(note)


# --------------------------------------------------------------------------- combine
@app.command()
@handles_errors
def combine(
    run: Annotated[Path, typer.Argument(help="Run directory whose label-free scores are combined.")],
    calibration: Annotated[str, typer.Option(help="The labelled split it is fitted on: the only labels it reads.")] = "val",
    folds: Annotated[int, typer.Option(help="Cross-fitting folds (2 to 50), by a hash of each sample id.")] = 5,
    target: Annotated[
        str,
        typer.Option(
            help="Whose errors it predicts: 'ensemble' (this run's final ensemble) or the directory of another run holding the same calibration samples (a cheap model of another family, e.g. a zoo's sklearn:logreg run)."
        ),
    ] = "ensemble",
    k: Annotated[int, typer.Option(help="Neighbours of knn_disagreement and untrust, 1 to 1000 (a --keep reduced run keeps k = 15 only).")] = 15,
):
    """Fit `combined`, a logistic regression over the run's label-free scores that predicts errors, on a
    labelled calibration split, and keep it in RUN/combined.json (JSON, no pickle). `difficulty`, `hardset
    --score combined`, `mitigate --score combined` and the report then use it; without this command they fit
    it with the defaults. It needs the labels of the calibration split, never those of the samples it scores:
    each calibration sample is scored by the fit of the folds it is not in, every other split by the fit on
    all of them."""
    from ..combined import COMBINED_FILE, check_folds
    from ..difficulty import fit_combined_run
    from ..neighbours import check_k, check_kept_k
    from ..store import RunStore

    check_folds(folds)
    check_k(k)
    store = RunStore.open(run)
    check_kept_k(store, k)
    if target != "ensemble":
        RunStore.open(target)  # not a run: one line now
    fit = fit_combined_run(store, calibration=calibration, folds=folds, target=target, k=k)
    rows = [[name, coef] for name, coef in zip(fit.features, fit.coef)]
    term.table("combined: weights on standardised scores (log-odds of an error per standard deviation)", ["score", "weight"], rows)
    term.info(
        f"fitted on {fit.n_calibration} labelled {calibration} samples ({fit.n_errors} errors of {fit.target}); "
        f"cross-fitted AUROC {fit.cross_fitted_auroc:.4f}; wrote {Path(run) / COMBINED_FILE}"
    )


# --------------------------------------------------------------------------- status
@app.command()
@handles_errors
def status(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print the status as JSON instead of a table.")] = False,
):
    """Per member, the epochs it has ended and whether a process is writing it now; and which
    epochs are committed (ended by every member, so scoring reads them)."""
    import json

    from ..store import RunStore

    store = RunStore.open(run)
    store.check_chunks()  # a committed epoch with a chunk file missing is damage, said here as by every command
    state = store.status()
    if json_output:
        print(json.dumps(state, indent=2))
        return
    rows = [[m["member"], len(m["ended_epochs"]), term.epoch_ranges(m["ended_epochs"]) or "-", m["writer"] or "-"] for m in state["members"]]
    term.table(f"{run}: members", ["member", "epochs ended", "which", "writing now"], rows)
    committed = state["committed_epochs"]
    term.info(f"committed epochs ({len(committed)}): {term.epoch_ranges(committed) or 'none yet'}; kept: {state['keep']}")


# --------------------------------------------------------------------------- report
@app.command()
@handles_errors
def report(
    run: Annotated[Path, typer.Argument(help="The run to report on (its val split is the reference where there is one).")],
    out: Annotated[Path, typer.Option(help="Directory for index.html, figures (PNG, SVG), tables/ (CSV) and metrics.json.")],
    compare: Annotated[
        list[Path] | None, typer.Option(help="Another ensemble run on the same samples (repeatable): Kendall tau and 2-D histogram (figure 3).")
    ] = None,
    models: Annotated[
        list[Path] | None, typer.Option(help="Other model runs (repeatable, e.g. a zoo's): their error per confusion bin (figure 4).")
    ] = None,
    mitigation: Annotated[Path | None, typer.Option(help="Directory written by `confusion mitigate`: adds figure 7.")] = None,
    bins: Annotated[int, typer.Option(help="Fixed-width score bins over [0, log2 C] bits.")] = 20,
    min_count: Annotated[int, typer.Option(help="Bins with fewer samples than this are left out of error curves and correlations.")] = 20,
    gallery: Annotated[
        int, typer.Option(help="Easiest and hardest samples shown per class (images; at most 3 each as a table of texts or metadata).")
    ] = 6,
    signal: Annotated[
        str | None,
        typer.Option(
            help="FILE.csv:COLUMN (or .parquet): a per-sample number you trust (human agreement, annotation time), joined by the file's 'sample' (or 'id') column; adds each difficulty score's Spearman and Kendall correlation with it, its AUROC for the signal's lowest quartile, and the signal by confusion decile."
        ),
    ] = None,
    ceiling_threshold: Annotated[
        float,
        typer.Option(
            help="Probability in (0, 1): a compared model's error is out of reach of any label-free score (the ceiling) where this run's final ensemble predicts the same wrong class with top probability above it."
        ),
    ] = 0.9,
):
    """Draw the paper's analyses of a run as an offline HTML page with figures, CSV tables and metrics.json."""
    from ..analyses import MAX_BINS
    from ..report import ReportOptions, build_report, check_inputs, check_signal_join, read_signal
    from ..store import RunStore

    if not 2 <= bins <= MAX_BINS or min_count < 1 or gallery < 1:
        raise InputError(f"--bins must be 2 to {MAX_BINS:,}, --min-count and --gallery at least 1")
    if not 0 < ceiling_threshold < 1:
        raise InputError(f"--ceiling-threshold must be a probability in (0, 1), got {ceiling_threshold}")
    check_replaceable_folder(out, "report")
    check_output_folder(out)
    check_inputs(run, compare or [], models or [], mitigation)
    if signal is not None:  # a bad file or column, or ids that match nothing, is refused before any work
        _, signal_ids, _ = read_signal(signal)
        check_signal_join(RunStore.open(run), signal_ids)
    options = ReportOptions(
        compare=compare or [],
        models=models or [],
        mitigation=mitigation,
        bins=bins,
        min_count=min_count,
        gallery_per_class=gallery,
        signal=signal,
        ceiling_threshold=ceiling_threshold,
    )
    metrics = build_report(run, out, options, progress=lambda message: term.info(f"report: {message}"))
    rows = []
    for split, entry in metrics.items():
        if isinstance(entry, dict) and "mean_confusion" in entry and "n" in entry:
            baselines = entry.get("baselines", {})
            rows.append(
                [
                    split,
                    entry["n"],
                    entry["mean_confusion"],
                    entry.get("error_rate", float("nan")),
                    entry.get("pearson_error_by_bin", float("nan")),
                    entry.get("auroc_error", float("nan")),
                    baselines.get("auroc_single_entropy", float("nan")),
                    baselines.get("auroc_msp", float("nan")),
                ]
            )
    term.table("report", ["split", "samples", "mean confusion (bits)", "error", "Pearson (bins)", "AUROC", "AUROC entropy", "AUROC MSP"], rows)
    for name, entry in metrics.get("transfer", {}).items():
        term.info(f"Kendall tau with {name}: {entry['kendall_tau']:.4f} on {entry['n']} {entry['split']} samples")
    term.info(f"wrote {Path(out) / 'index.html'}")


# --------------------------------------------------------------------------- hardset
def export_facts(store: RunStore, run: Path, split: str, table, score: str, selection: str, lowest: float) -> dict:
    """What a hard set's card says of how it was built, and the scoring ensemble's error on it
    against the rest of the split where every label is known."""
    import numpy as np

    from ..difficulty import SCORES

    labels = store.labels(split)
    config = store.meta.get("config") or {}
    facts = {
        "run": str(Path(run).resolve()),
        "run_name": Path(run).resolve().name,
        "members": store.n_members,
        "epochs": len(store.recorded_epochs),
        "arch": config.get("arch") or store.meta.get("arch"),
        "data": config.get("data"),
        "score": score,
        "score_unit": SCORES[score].unit,
        "selection": selection,
        "split": split,
        "split_size": store.n_samples(split),
        "lowest": float(lowest),
        "errors": {},
    }
    if (labels >= 0).all():
        wrong = store.final_predictions(split).ensemble_argmax != labels
        chosen = np.isin(store.sample_ids(split), table["sample"].to_numpy().astype(str))
        rest = wrong[~chosen].mean() if (~chosen).any() else float("nan")
        facts["errors"][f"{facts['run_name']} (the scoring ensemble)"] = {"hard": float(wrong[chosen].mean()), "rest": float(rest)}
    return facts


@app.command()
@handles_errors
def hardset(
    run: Annotated[Path, typer.Argument(help="Run directory whose confusion chooses the samples (no labels needed).")],
    out: Annotated[
        Path,
        typer.Option(
            help="Manifest to write (.csv or .parquet): sample, split, confusion (bits), confusion_normalized, rank, label (-1 = unknown), predicted, source."
        ),
    ],
    split: Annotated[str, typer.Option(help="Split to choose from (any split, labelled or not).")] = "val",
    top: Annotated[float | None, typer.Option(help="Keep this fraction of the split with the highest confusion, in (0, 1].")] = None,
    threshold: Annotated[float | None, typer.Option(help="Keep every sample with confusion >= this many bits.")] = None,
    per_class: Annotated[
        bool, typer.Option(help="With --top: keep the fraction within each class (the label, or the ensemble's prediction where labels are unknown).")
    ] = False,
    materialize: Annotated[
        Path | None,
        typer.Option(
            help="Also write the chosen samples into this folder, for other tools: images (see --format), or for text data the documents as hardset.csv."
        ),
    ] = None,
    format: Annotated[
        str, typer.Option(help="With --materialize: folders (one folder of PNGs per class) or npz (x, y, ids, confusion, classes).")
    ] = "folders",
    score: Annotated[
        str,
        typer.Option(
            help="The label-free score that ranks the samples (higher = harder): confusion (the paper's), expected_entropy, disagreement, last_epoch_entropy, member_entropy, single_model_entropy, view_confusion (bits), ensemble_msp, flips, stable_epoch, knn_disagreement, untrust, view_disagreement, or combined (log-odds; fitted on val's labels, never the chosen samples'). --threshold is in its unit. See `confusion difficulty --help`."
        ),
    ] = "confusion",
    export: Annotated[
        str | None,
        typer.Option(
            help="Also write the hard set as hf:DIR, a Hugging Face datasets folder (load_from_disk): the images, texts or feature vectors with label, class names, confusion, rank and split of origin, and a dataset card (README.md) saying how it was built. Needs the hf extra."
        ),
    ] = None,
):
    """Choose the most confusing samples of a split as a hard benchmark set (a manifest)."""
    from ..datasets import load_for_run
    from ..hardset import images_for, manifest
    from ..hardset import materialize as write_images
    from ..hardset import materialize_texts as write_texts
    from ..hfexport import check_export, export_hf
    from ..store import RunStore

    table_path(out)
    if format not in ("folders", "npz"):
        raise InputError(f"--format must be folders or npz, got {format!r}")
    exported = check_export(export) if export is not None else None
    store = RunStore.open(run)
    texts = "text" in store.metadata_columns(split, ()) if split in store.splits else False
    config = store.meta.get("config")
    for option, given in (("--materialize", materialize), ("--export", exported)):
        if given is not None and not texts and not config:
            raise InputError(
                f"{run} was imported, so its images are not known here; {option} needs a run made by `confusion train` (or documents given to import --meta as a 'text' column)"
            )
    if materialize is not None:
        check_output_folder(materialize)
        check_replaceable_folder(materialize, "hardset")
    if exported is not None:
        check_output_folder(exported)
    table = manifest(store, split, top=top, threshold=threshold, per_class=per_class, score=score)
    wants_inputs = (materialize is not None or exported is not None) and not texts
    dataset = load_for_run(config, run=run) if wants_inputs else None  # before anything is written
    if materialize is not None and dataset is not None and dataset.kind != "images" and format == "folders":
        raise InputError("this run's data are feature vectors, not pictures: use --materialize with --format npz")
    write_table_atomic(table, out)
    n = store.n_samples(split)
    lowest = table["score_value"].min() if len(table) else float("nan")
    term.info(f"hard set: {len(table)} of {n} {split} samples ({len(table) / n:.1%}), {score} >= {lowest:.3f}; wrote {out}")
    if "certain" in table:
        term.info(
            f"top-k logs: {int(table['certain'].sum())} of the {len(table)} chosen samples are certain to be chosen whatever "
            f"the probability mass the logs left out (column 'certain'; bounds in confusion_low/confusion_high)"
        )
    if materialize is not None and texts:
        write_texts(table, store.classes, materialize, run=run)
        term.info(f"wrote {len(table)} documents to {materialize / 'hardset.csv'} (and manifest.csv)")
    elif materialize is not None:
        write_images(table, images_for(table, dataset), store.classes, materialize, format=format, run=run)
        term.info(f"wrote {len(table)} images ({format}) and manifest.csv into {materialize}")
    if exported is not None:
        kind = "text" if texts else dataset.kind
        selection = f"top {top:g} of the split" if top is not None else f"{score} >= {threshold:g}"
        facts = export_facts(store, run, split, table, score, selection + (", per class" if per_class else ""), lowest)
        export_hf(table, store.classes, exported, inputs=None if texts else images_for(table, dataset), kind=kind, facts=facts, run=run)
        term.info(f"wrote the hard set as a Hugging Face datasets folder with its card: {exported} (datasets.load_from_disk)")
