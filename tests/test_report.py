"""`confusion report` on tiny real runs: every linked file exists, strings are escaped, and a
real headless browser shows every image with no script error."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from confusion.importing import import_predictions
from confusion.training import TrainConfig, train

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    pytest.importorskip("torch", reason="trains a run: needs the train extra")
    root = tmp_path_factory.mktemp("runs")
    base = dict(data="digits", members=2, epochs=5, batch_size=32, lr=3e-3, workers=0)
    small = train(TrainConfig(arch="mlp-s", **base), root / "small")
    large = train(TrainConfig(arch="mlp-m", **base), root / "large")
    cnn = train(TrainConfig(arch="cnn-s", **{**base, "members": 1}), root / "cnn")
    return root, small, large, cnn


@pytest.fixture(scope="module")
def report_dir(runs, tmp_path_factory):
    from typer.testing import CliRunner

    from confusion.cli import app

    root, _, _, _ = runs
    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(
        app,
        [
            "report",
            str(root / "small"),
            "--out",
            str(out),
            "--compare",
            str(root / "large"),
            "--models",
            str(root / "large"),
            "--models",
            str(root / "cnn"),
            "--min-count",
            "5",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    return out


def test_report_links_only_files_it_wrote(report_dir):
    page = (report_dir / "index.html").read_text()
    linked = re.findall(r'src="([^"]+)"', page)
    assert {
        "fig1_gallery.png",
        "fig2_distribution.png",
        "fig2_error_by_bin.png",
        "fig3_transfer_0.png",
        "fig4_models_error_by_bin.png",
        "fig5_epochs_seeds.png",
        "fig6_epochs_seeds_error.png",
        "aggregate.png",
    } <= set(linked)
    for name in linked:
        assert (report_dir / name).stat().st_size > 1000, name
    assert "http://" not in page and "https://" not in page  # works offline
    assert (report_dir / "tables" / "error_by_bin_val.csv").exists()


def test_metrics_json_has_the_agreed_names(report_dir):
    metrics = json.loads((report_dir / "metrics.json").read_text())
    for split in ("train", "val"):
        entry = metrics[split]
        for key in ("n", "mean_confusion", "error_rate", "pearson_error_by_bin", "spearman_error_by_bin", "auroc_error"):
            assert key in entry, key
        assert set(entry["baselines"]) >= {"auroc_single_entropy", "auroc_msp"}
        assert 0.0 <= entry["auroc_error"] <= 1.0
    transfer = metrics["transfer"]
    assert len(transfer) == 1 and -1 <= next(iter(transfer.values()))["kendall_tau"] <= 1
    robustness = metrics["robustness"]
    assert set(robustness["epochs"]["all"]) == {"all"} or "all" in robustness["epochs"]["all"]
    assert robustness["seeds"]["1"]["kendall_tau_with_full"] <= 1.0
    assert metrics["aggregate"]["n_runs"] == 3


def test_every_string_is_escaped(tmp_path, cli):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=(2, 3, 60))
    import_predictions(probs, tmp_path / "run", labels=rng.integers(0, 3, 60), classes=["<script>alert(1)</script>", "a&b", "c"])
    (tmp_path / "run").rename(tmp_path / "run<b>")
    result = cli("report", tmp_path / "run<b>", "--out", tmp_path / "out", "--min-count", "2")
    assert result.exit_code == 0, result.stderr
    page = (tmp_path / "out" / "index.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "run<b>" not in page and "run&lt;b&gt;" in page


def test_report_errors(cli, tmp_path):
    result = cli("report", tmp_path / "nothing", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "does not exist" in result.stderr
    result = cli("report", tmp_path, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "not a run store" in result.stderr


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/setup.sh test installs it)")
def test_page_in_a_real_headless_browser(report_dir):
    from playwright.sync_api import sync_playwright

    problems = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
        )
        page = browser.new_page()
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto((report_dir / "index.html").as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all("img", "all => all.map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        page.screenshot(path=str(report_dir / "screenshot.png"), full_page=True)
        browser.close()
    assert len(images) >= 8
    assert all(complete and width > 0 for _, complete, width in images), images
    assert problems == []


def test_every_model_gets_transfer_aurocs_and_its_own_baselines(report_dir):
    from confusion.difficulty import SCORES

    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert len(metrics["models"]) == 2
    for name, entry in metrics["models"].items():
        assert 0.0 <= entry["auroc_error"] <= 1.0
        assert 0.0 <= entry["own_baselines"]["auroc_msp"] <= 1.0 and 0.0 <= entry["own_baselines"]["auroc_entropy"] <= 1.0
        for score in SCORES:
            assert 0.0 <= metrics["difficulty"][score][name]["auroc_error"] <= 1.0, score
        assert metrics["difficulty"]["confusion"][name]["auroc_error"] == entry["auroc_error"]
    assert metrics["difficulty_summary"]["own_msp"]["n_models"] == 2
    cost = {(row["members"], row["epochs"]): row["mean_auroc_error"] for row in metrics["cost"]}
    assert (2, 5) in cost and (1, 1) in cost  # all members x all 5 epochs, and one model's last epoch
    page = (report_dir / "index.html").read_text()
    assert "Which difficulty score predicts another model&#x27;s errors?" in page and 'src="difficulty_transfer.png"' in page
    table = (report_dir / "tables" / "difficulty_transfer.csv").read_text()
    assert "cartography_confidence (labels)" in table and "own 1 - max prob" in table


def test_the_numbers_are_computed_without_writing_a_page(runs, tmp_path):
    from confusion.report import compute_report, render_report

    root, _, _, _ = runs
    result = compute_report(root / "small", models=[root / "cnn"], min_count=5)
    assert result.curves["val"].pearson == result.metrics["val"]["pearson_error_by_bin"]
    assert set(result.model_curves) == set(result.metrics["models"]) and len(result.difficulty) == 359
    assert not any(tmp_path.iterdir())  # nothing written yet
    metrics = render_report(result, tmp_path / "page")
    assert (tmp_path / "page" / "index.html").exists() and metrics is result.metrics


def _imported(tmp_path, name, probs, labels, ids):
    out = tmp_path / name
    import_predictions(probs, out, labels=labels, split="val", sample_ids=[str(i) for i in ids])
    return out


def test_the_aggregate_panel_compares_only_runs_on_the_same_samples_and_says_which(tmp_path):
    from confusion.report import compute_report

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 120)
    runs = [
        _imported(tmp_path, f"r{k}", rng.dirichlet(np.full(4, 0.5 + k), size=(2, 2, 120)).astype(np.float32), labels, range(120)) for k in range(3)
    ]
    other = _imported(tmp_path, "other", rng.dirichlet(np.ones(4), size=(2, 2, 60)).astype(np.float32), labels[:60], range(60))
    result = compute_report(runs[0], models=[runs[1], other], min_count=1)
    assert "aggregate" not in result.metrics  # two comparable runs are not a correlation
    result = compute_report(runs[0], models=[runs[1], runs[2], other], min_count=1)
    aggregate = result.metrics["aggregate"]
    assert set(aggregate["runs"]) == {"r0 (import, 2 members)", "r1 (import, 2 members)", "r2 (import, 2 members)"}
    assert aggregate["split"] == "val" and aggregate["left_out"] == {"other (import, 2 members)": "other val samples"}


def test_the_prose_follows_the_scores(tmp_path):
    from confusion.report import build_report

    rng = np.random.default_rng(4)
    labels = rng.integers(0, 4, 200)
    confused = _imported(tmp_path, "confused", rng.dirichlet(np.full(4, 20.0), size=(3, 2, 200)).astype(np.float32), labels, range(200))
    build_report(confused, tmp_path / "report", min_count=1)
    page = (tmp_path / "report" / "index.html").read_text()
    assert "most are easy" not in page and "most samples are easy" not in page
    assert "most samples confuse the ensemble" in page
    sure = np.eye(4, dtype=np.float32)[labels] * 0.992 + 0.002
    easy = _imported(tmp_path, "easy", np.broadcast_to(sure, (3, 2, 200, 4)).copy(), labels, range(200))
    build_report(easy, tmp_path / "report2", min_count=1)
    assert "most samples are easy" in (tmp_path / "report2" / "index.html").read_text()


def test_no_raw_tex_reaches_the_page_or_its_figures(cli, tmp_path, probs_file):
    """Issue 27: with mathtext off (user names may hold `$`), every log-scale axis and colour bar
    printed its ticks as `$\\mathdefault{10^{3}}$`. Ticks are plain numbers now, and no `$` or
    `\\mathdefault` reaches the HTML or the SVG text."""
    path, labels, _, _ = probs_file
    assert cli("import", "--probs", path, "--labels", labels, "--out", tmp_path / "a").exit_code == 0
    assert cli("import", "--probs", path, "--out", tmp_path / "b").exit_code == 0
    result = cli("report", tmp_path / "a", "--compare", tmp_path / "b", "--out", tmp_path / "rep", "--min-count", "1")
    assert result.exit_code == 0, result.stderr
    pages = [tmp_path / "rep" / "index.html", *(tmp_path / "rep").glob("*.svg")]
    assert len(pages) > 3 and any("joint" in p.name or "fig3" in p.name for p in pages)  # a colour bar on a log scale among them
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "mathdefault" not in text and "$" not in text, page.name


def test_a_run_without_pictures_or_texts_shows_its_figures_first(cli, tmp_path, probs_file):
    """Issue 27: a Recorder run's report opened with a 60-row table of bare sample numbers."""
    path, labels, _, _ = probs_file
    assert cli("import", "--probs", path, "--labels", labels, "--out", tmp_path / "run").exit_code == 0
    assert cli("report", tmp_path / "run", "--out", tmp_path / "rep", "--min-count", "1").exit_code == 0
    page = (tmp_path / "rep" / "index.html").read_text(encoding="utf-8")
    assert page.index("<img") < page.index("Easiest and hardest samples")


def test_a_panel_with_too_few_samples_per_bin_says_so(cli, tmp_path, probs_file):
    """Issue 27: panels with too few samples per bin were drawn as single dots with "ρ=nan"."""
    path, labels, _, _ = probs_file
    assert cli("import", "--probs", path, "--labels", labels, "--out", tmp_path / "run").exit_code == 0
    assert cli("report", tmp_path / "run", "--out", tmp_path / "rep", "--min-count", "150").exit_code == 0
    for svg in (tmp_path / "rep").glob("*error*.svg"):
        text = svg.read_text(encoding="utf-8")
        assert "nan" not in text and "too few samples per bin to draw" in text, svg.name


def test_the_page_says_why_where_confusion_ranks_a_models_errors_below_its_own_confidence(cli, tmp_path, probs_file):
    """Issue 27: nothing said why where a model's own confidence beat this run's confusion."""
    path, labels_path, probs, labels = probs_file
    assert cli("import", "--probs", path, "--labels", labels_path, "--out", tmp_path / "run").exit_code == 0
    rng = np.random.default_rng(11)
    wrong = rng.random(len(labels)) < 0.3
    predicted = np.where(wrong, (labels + 1) % 10, labels)
    own = np.full((len(labels), 10), 0.0)
    own[np.arange(len(labels)), predicted] = np.where(wrong, 0.2, 0.95)  # unsure exactly where it is wrong
    own += (1 - own.sum(axis=1, keepdims=True)) / 10
    np.save(tmp_path / "model.npy", own)
    assert cli("import", "--probs", tmp_path / "model.npy", "--labels", labels_path, "--out", tmp_path / "model").exit_code == 0
    assert cli("report", tmp_path / "run", "--models", tmp_path / "model", "--out", tmp_path / "rep", "--min-count", "1").exit_code == 0
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    below = metrics["below_own_confidence"]
    assert list(below["models"]) == ["model (import, 1 member)"] and below["models"]["model (import, 1 member)"]["auroc_own_msp"] == pytest.approx(
        1.0
    )
    assert len(below["mean_confusion_per_epoch"]) == 4 and below["training_epochs"] == [1, 2, 3, 4]
    assert "ranks their errors below their own confidence" in (tmp_path / "rep" / "index.html").read_text()
