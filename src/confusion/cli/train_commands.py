"""The commands that train models: train, evaluate, zoo, mitigate and demo (the `train` extra)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from .. import _terminal as term
from .._files import write_table_atomic
from ..cluster import check_spec as check_dask_spec
from ..cluster import dask_client
from ..errors import InputError
from ..zoonames import DEFAULT_ARCHS
from .common import DATA_HELP, EMBEDDINGS_HELP, KEEP_HELP, app, handles_errors, table_path

__all__ = [
    "demo",
    "evaluate",
    "mitigate",
    "train",
    "zoo",
]


# --------------------------------------------------------------------------- train
@app.command()
@handles_errors
def train(
    out: Annotated[Path, typer.Option(help="Run directory to create; an existing one with the same settings is resumed.")],
    data: Annotated[str, typer.Option(help=DATA_HELP)] = "fashion-mnist",
    arch: Annotated[
        str,
        typer.Option(
            help="Architecture: linear, mlp-s/m/l, cnn-s/m/l, resnet-s/m/l or torchvision:NAME (feature and text data: linear and mlp-*). A comma-separated list gives one per member (--arch mlp-s,linear,mlp-m with --members 3): a mixed ensemble."
        ),
    ] = "cnn-s",
    members: Annotated[int, typer.Option(help="Ensemble members M (the paper: 3); member i uses seed + i.")] = 3,
    epochs: Annotated[int, typer.Option(help="Training epochs T.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of member 0: initialisation, data order and augmentation follow it.")] = 0,
    record_every: Annotated[int, typer.Option(help="Record predictions every K epochs (the last epoch is always recorded).")] = 1,
    record_train: Annotated[
        str,
        typer.Option(
            help="How train-split predictions are taken: eval (a separate eval-mode pass) or in-loop (from the training forward pass: cheaper, noisier)."
        ),
    ] = "eval",
    optimizer: Annotated[str, typer.Option(help="adam or sgd (momentum 0.9, Nesterov).")] = "adam",
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay.")] = 0.0,
    schedule: Annotated[str, typer.Option(help="Learning-rate schedule per step: cosine (down to 1% of --lr) or constant.")] = "cosine",
    batch_size: Annotated[int, typer.Option(help="Training batch size, in samples.")] = 128,
    augment: Annotated[bool, typer.Option(help="Random shifts of up to 2 pixels, and horizontal flips where they keep the label.")] = True,
    limit_train: Annotated[int | None, typer.Option(help="Train on a seeded subset of this many training samples.")] = None,
    limit_val: Annotated[int | None, typer.Option(help="Record a seeded subset of this many validation samples.")] = None,
    root: Annotated[Path | None, typer.Option(help="Directory holding the dataset's files (Fashion-MNIST IDX files).")] = None,
    unlabeled: Annotated[
        Path | None, typer.Option(help="Extra split without labels, scored like the others: .npy/.npz of images or a folder of image files.")
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help="Resize folder images to this many pixels square (default: their size, or 32 if sizes differ).")
    ] = None,
    split_seed: Annotated[int, typer.Option(help="Seed of the train/val split (datasets without one) and of the --limit-* subsets.")] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    precision: Annotated[
        str, typer.Option(help="auto (bf16 only where the hardware computes in it and ONEDNN_MAX_CPU_ISA does not cap it below), fp32, or bf16.")
    ] = "auto",
    workers: Annotated[
        int | None, typer.Option(help="Training processes (default: one per member on the CPU, 1 on CUDA; 0 = in this process).")
    ] = None,
    member: Annotated[
        int | None,
        typer.Option(
            help="Train only member i (0..members-1): one job per seed (a SLURM array, machines sharing the directory). The first job creates the run, the others join it; an epoch is committed once every member's job has ended it. Same settings in every job."
        ),
    ] = None,
    bagging: Annotated[
        bool,
        typer.Option(
            help="Member diversity: each member trains on its own bootstrap resample of the training split (as many draws as samples, with replacement, fixed by its seed)."
        ),
    ] = False,
    feature_subset: Annotated[
        float | None,
        typer.Option(
            help="Member diversity, feature and text data: each member sees its own random subset of this fraction of the features, in (0, 1]."
        ),
    ] = None,
    encoder: Annotated[
        str | None,
        typer.Option(
            help="Text data: the sentence encoder, a sentence-transformers model name (downloaded once, needs internet) or a local folder holding one (default: all-MiniLM-L6-v2, installed offline). Documents are cut at 256 tokens."
        ),
    ] = None,
    keep: Annotated[str, typer.Option(help=KEEP_HELP)] = "raw",
    embeddings: Annotated[str, typer.Option(help=EMBEDDINGS_HELP)] = "last",
    views: Annotated[
        str,
        typer.Option(
            help="Test-time views recorded with the embeddings, images only: auto (a horizontal flip where it keeps the label, and 2-pixel shifts left, right, up and down), none, or a comma-separated list of flip, left, right, up, down. Each costs one more forward pass over every split at those epochs and 2 C bytes per member and sample; they give view_disagreement and view_confusion."
        ),
    ] = "auto",
    dask: Annotated[
        str | None,
        typer.Option(
            help="Train on a Dask cluster: one task per member (each the --member job) on workers that share --out; a worker lost mid-run is replaced and its member resumes from its last ended epoch. A scheduler address (tcp://HOST:PORT) or local:N (N local worker processes). Needs the dask extra."
        ),
    ] = None,
):
    """Train M members (by default they differ only by seed; --bagging, --feature-subset and a list of --arch
    make them differ more); after every epoch record each member's probabilities on every split into the
    run store. Rerun the same command to resume."""
    from ..training import TrainConfig, final_accuracy, train_on_cluster
    from ..training import train as train_ensemble

    config = TrainConfig(
        data=data,
        arch=arch,
        members=members,
        epochs=epochs,
        seed=seed,
        record_every=record_every,
        record_train=record_train,
        optimizer=optimizer,
        lr=lr,
        weight_decay=weight_decay,
        schedule=schedule,
        batch_size=batch_size,
        augment=augment,
        limit_train=limit_train,
        limit_val=limit_val,
        root=str(root) if root else None,
        unlabeled=str(unlabeled) if unlabeled else None,
        image_size=image_size,
        split_seed=split_seed,
        device=device,
        precision=precision,
        workers=workers,
        member=member,
        bagging=bagging,
        feature_subset=feature_subset,
        encoder=encoder,
        keep=keep,
        embeddings=embeddings,
        views=views,
    ).check()
    started = time.perf_counter()
    if dask is not None:
        check_dask_spec(dask)
        if member is not None or workers is not None:
            raise InputError("--dask runs one task per member on the cluster: drop --member and --workers")
        with dask_client(dask) as client:
            term.info(f"training {members} members on the Dask cluster {dask} into {out}")
            store = train_on_cluster(config, out, client, hooks=term.CommitLines())
    else:
        with term.TrainingDisplay(members, epochs) as display:
            store = train_ensemble(config, out, hooks=display)
    if member is not None and len(store.recorded_epochs) < len(config.record_epochs()):
        term.info(
            f"{out}: member {member} finished in {time.perf_counter() - started:.0f} s; "
            f"{len(store.recorded_epochs)} of {len(config.record_epochs())} epochs committed so far "
            f"(the others wait for the other members' jobs). See: confusion status {out}"
        )
        return
    accuracy = final_accuracy(store)
    term.info(
        f"{out}: {store.n_members} members x {len(store.recorded_epochs)} recorded epochs of {arch} on {data} "
        f"in {time.perf_counter() - started:.0f} s; ensemble val accuracy at the last epoch {accuracy:.4f}. "
        f"Next: confusion score {out} --out scores.csv"
    )


# --------------------------------------------------------------------------- evaluate
@app.command()
@handles_errors
def evaluate(
    model: Annotated[
        str,
        typer.Argument(
            help="A run directory (its members' final weights; or its recorded predictions when it has no weights), an architecture name (torchvision:NAME, timm:NAME, cnn-m, ...) with --weights, or a predictions table (.csv/.parquet: sample, and predicted or one probability column per class). Runs without a dataset and tables are joined by sample id to the labels of --scores RUN."
        ),
    ],
    hardset: Annotated[Path, typer.Option(help="Hard-set manifest from `confusion hardset`.")],
    data: Annotated[str | None, typer.Option(help="Dataset the hard set was chosen from (default: the run's own).")] = None,
    root: Annotated[Path | None, typer.Option(help="Directory holding the dataset's files.")] = None,
    weights: Annotated[Path | None, typer.Option(help="Weights file for an architecture name (a state dict, loaded with weights_only=True).")] = None,
    scores: Annotated[
        Path | None,
        typer.Option(
            help="A `confusion score` table (.csv/.parquet) or a run directory: adds the error per confusion band, and limits the complement to the samples it scored."
        ),
    ] = None,
    bins: Annotated[int, typer.Option(help="Number of fixed-width confusion bands over [0, log2 C] bits, with --scores.")] = 10,
    per_member: Annotated[bool, typer.Option(help="With a run directory: one row per member instead of the members' averaged prediction.")] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    out: Annotated[
        Path | None, typer.Option(help="Write the results table (.csv or .parquet); per-band rows go to a file beside it with _bands in its name.")
    ] = None,
):
    """Top-1 error of any model on a hard set, on its complement and overall (and per confusion band)."""
    from ..analyses import MAX_BINS
    from ..datasets import check_root
    from ..evaluate import by_id, dataset_for, evaluate_on_hardset, limit_to_scored, load_predictors, read_score_table
    from ..hardset import read_manifest
    from ..store import RunStore, is_run_store
    from ..training import check_device

    table_path(out)
    check_device(device)
    if not 1 <= bins <= MAX_BINS:
        raise InputError(f"--bins must be 1 to {MAX_BINS:,}, got {bins}")
    check_root(root)
    hard = read_manifest(hardset)
    runs_its_data = is_run_store(model) and RunStore.open(model).meta.get("config")
    if data is None and not runs_its_data and weights is None:
        predictors, dataset = by_id(model, hard, scores)  # imported runs, prediction tables: joined by sample id
    else:
        dataset = dataset_for(model, data, root)
        predictors = load_predictors(model, dataset, weights=str(weights) if weights else None, per_member=per_member, device=device)
    score_table = None
    if scores is not None:
        score_table = read_score_table(scores)
        limit_to_scored(dataset, hard, score_table)
    results, bands = evaluate_on_hardset(predictors, dataset, hard, scores=score_table, bins=bins)
    term.table(
        f"top-1 error on the hard set ({int(results['hard_n'].iloc[0])} samples) vs the rest",
        ["model", "hard", "rest", "overall", "hard / rest"],
        [[r.model, r.hard_error, r.rest_error, r.overall_error, r.hard_to_rest] for r in results.itertuples()],
    )
    if bands is not None:
        term.table(
            "top-1 error per confusion band (bits)",
            ["model", "band", "samples", "error"],
            [[r.model, f"{r.band_low:.2f}-{r.band_high:.2f}", r.n, r.error] for r in bands.itertuples()],
        )
    if out is not None:
        write_table_atomic(results, out)
        if bands is not None:
            write_table_atomic(bands, out.with_name(out.stem + "_bands" + out.suffix))
        term.info(f"wrote {out}")


# --------------------------------------------------------------------------- zoo


@app.command()
@handles_errors
def zoo(
    out: Annotated[Path, typer.Option(help="Directory for one run per model (OUT/<arch>/) and zoo.json.")],
    data: Annotated[str, typer.Option(help="Dataset name (as for train).")] = "fashion-mnist",
    archs: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated models: any trainer architecture, sklearn:logreg, sklearn:forest, sklearn:tfidf (text data: TF-IDF + logistic regression on the documents), pretrained:efficientnet-lite0 (images: a linear probe on frozen ImageNet features). Default for images: "
            + ",".join(DEFAULT_ARCHS["images"])
            + "; for features: "
            + ",".join(DEFAULT_ARCHS["features"])
            + "; for text: "
            + ",".join(DEFAULT_ARCHS["text"])
            + "."
        ),
    ] = None,
    epochs: Annotated[int, typer.Option(help="Epochs per model (the probe: epochs of its linear layer).")] = 5,
    record_every: Annotated[int, typer.Option(help="Record predictions every K epochs (the last is always recorded).")] = 1,
    limit_train: Annotated[int | None, typer.Option(help="Train on a seeded subset of this many training samples.")] = None,
    limit_val: Annotated[int | None, typer.Option(help="Record a seeded subset of this many validation samples.")] = None,
    root: Annotated[Path | None, typer.Option(help="Directory holding the dataset's files.")] = None,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    batch_size: Annotated[int, typer.Option(help="Training batch size, in samples.")] = 128,
    seed: Annotated[int, typer.Option(help="Seed of every model.")] = 0,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    encoder: Annotated[str | None, typer.Option(help="Text data: the sentence encoder (as for train).")] = None,
):
    """Train one model per architecture across sizes and families (and scikit-learn and a pre-trained probe)."""
    from ..datasets import data_kind
    from ..training import TrainConfig
    from ..zoo import train_zoo

    names = [a.strip() for a in (archs if archs is not None else ",".join(DEFAULT_ARCHS[data_kind(data)])).split(",") if a.strip()]
    if not names:
        raise InputError("--archs lists no model")
    config = TrainConfig(
        data=data,
        members=1,
        epochs=epochs,
        record_every=record_every,
        limit_train=limit_train,
        limit_val=limit_val,
        root=str(root) if root else None,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        device=device,
        encoder=encoder,
    )
    summary = train_zoo(names, out, config, on_model=lambda arch: term.info(f"zoo: {arch}"))
    term.table(
        "zoo",
        ["model", "kind", "val accuracy", "seconds"],
        [[a, m["kind"], m["val_accuracy"], round(m["seconds"])] for a, m in summary["models"].items()],
    )


# --------------------------------------------------------------------------- mitigate
@app.command()
@handles_errors
def mitigate(
    run: Annotated[
        Path, typer.Argument(help="The scoring run: its train-split confusion makes the groups, its val-split confusion the evaluation bands.")
    ],
    out: Annotated[Path, typer.Option(help="Directory for metrics.json and one result per method and seed (kept on rerun).")],
    method: Annotated[
        list[str] | None, typer.Option(help="erm, groupdro or upsample (repeatable; default all three, ERM being the baseline).")
    ] = None,
    arch: Annotated[
        str | None, typer.Option(help="Architecture trained by every method (default: the scoring run's, its first member's when it mixes them).")
    ] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs per model.")] = 10,
    members: Annotated[int, typer.Option(help="Seeds per method (the same for every method).")] = 3,
    seed: Annotated[int, typer.Option(help="First seed.")] = 100,
    lr: Annotated[float, typer.Option(help="Peak learning rate (cosine schedule, Adam).")] = 1e-3,
    batch_size: Annotated[int, typer.Option(help="Batch size, in samples.")] = 128,
    score: Annotated[
        str,
        typer.Option(
            help="The label-free score in bits that bands the samples: confusion (the paper's), expected_entropy, disagreement, last_epoch_entropy, member_entropy or single_model_entropy."
        ),
    ] = "confusion",
    band_edges: Annotated[str | None, typer.Option(help="Comma-separated band edges in bits (default: the middle of [0, log2 C]).")] = None,
    quantiles: Annotated[str | None, typer.Option(help="Comma-separated quantiles of the train scores as band edges, e.g. 0.5,0.9.")] = None,
    per_class_groups: Annotated[bool, typer.Option(help="Groups are band x class instead of band.")] = False,
    eta: Annotated[float, typer.Option(help="GroupDRO step size for the group weights.")] = 0.01,
    group_adjustment: Annotated[float, typer.Option(help="GroupDRO's C: adds C / sqrt(group size) to each group's loss (0 = off).")] = 0.0,
    balanced_sampling: Annotated[bool, typer.Option(help="GroupDRO: draw batches with every group equally likely.")] = False,
    upsample_factor: Annotated[int, typer.Option(help="Upsample: times each high-band training sample is seen per epoch.")] = 5,
    augment: Annotated[bool, typer.Option(help="Random shifts and flips, as in train.")] = True,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
):
    """Train with confusion bands as groups (GroupDRO, upsampling) against ERM; report error per band."""
    from ..mitigation import MitigationConfig
    from ..mitigation import mitigate as run_mitigation

    def numbers(text: str | None, name: str) -> list[float] | None:
        if text is None:
            return None
        try:
            return [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise InputError(f"--{name} takes comma-separated numbers, got {text!r}") from None

    config = MitigationConfig(
        methods=method or ["erm", "groupdro", "upsample"],
        arch=arch,
        epochs=epochs,
        members=members,
        seed=seed,
        lr=lr,
        batch_size=batch_size,
        band_edges=numbers(band_edges, "band-edges"),
        quantiles=numbers(quantiles, "quantiles"),
        per_class_groups=per_class_groups,
        eta=eta,
        group_adjustment=group_adjustment,
        balanced_sampling=balanced_sampling,
        upsample_factor=upsample_factor,
        augment=augment,
        device=device,
        score=score,
    ).check()
    metrics = run_mitigation(run, out, config, on_done=lambda r: term.info(f"mitigate: {r['method']} seed {r['seed']}: val error {r['overall']:.4f}"))
    term.mitigation_table(metrics)


# --------------------------------------------------------------------------- demo
@app.command()
@handles_errors
def demo(
    out: Annotated[Path, typer.Option(help="Directory for every run, the zoo, the hard set, the mitigation and the report.")] = Path("demo-output"),
    quick: Annotated[
        bool,
        typer.Option(help="A slice (3,000 training and 2,000 validation images, fewer epochs): 2-3 minutes on 2 cores instead of 7-16 (by CPU)."),
    ] = False,
    data: Annotated[
        str,
        typer.Option(
            help="Dataset (as for train). fashion-mnist: the paper-like built-in one; bbc-news: the built-in text one (BBC News, 2,225 documents embedded by all-MiniLM-L6-v2; mlp-s and mlp-l ensembles, a zoo with TF-IDF, and a member-diversity stage)."
        ),
    ] = "fashion-mnist",
    root: Annotated[Path | None, typer.Option(help="Directory holding the dataset's files.")] = None,
    top: Annotated[float, typer.Option(help="Fraction of the val split, by highest confusion, that forms the hard set.")] = 0.1,
):
    """The paper end to end: scoring ensemble, larger ensemble, zoo, hard set, mitigation, report.
    Rerunning continues an interrupted demo."""
    from ..demo import run_demo

    run_demo(out, quick=quick, data=data, root=str(root) if root else None, top=top)
