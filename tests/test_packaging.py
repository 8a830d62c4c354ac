"""The scoring side installs and runs without PyTorch; commands that need an extra say which."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BLOCKED = ("torch", "torchvision", "mlxtend", "pytorch_lightning", "transformers")  # scikit-learn is a core dependency
# A finder placed first that refuses the optional packages, as if they were not installed.
BLOCK = (
    "import sys\n"
    "class NotInstalled:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    f"        if name.split('.')[0] in {BLOCKED!r}:\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "sys.meta_path.insert(0, NotInstalled())\n"
)
RUN = BLOCK + "from confusion.cli import main\nsys.argv = ['confusion', *sys.argv[1:]]\nmain()\n"


def without_torch(*args, cwd):
    done = subprocess.run([sys.executable, "-c", RUN, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


def test_score_import_report_hardset_difficulty_run_with_torch_unimportable(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "probs.npy", rng.dirichlet(np.full(5, 0.4), size=(3, 6, 300)).astype(np.float32))
    np.save(tmp_path / "other.npy", rng.dirichlet(np.full(5, 0.4), size=(1, 1, 300)).astype(np.float32))
    np.save(tmp_path / "labels.npy", rng.integers(0, 5, 300))
    commands = [
        ("score", "--probs", "probs.npy", "--out", "a.csv"),
        ("import", "--probs", "probs.npy", "--labels", "labels.npy", "--out", "run"),
        ("import", "--probs", "other.npy", "--labels", "labels.npy", "--out", "other"),
        ("score", "run", "--out", "b.parquet"),
        ("difficulty", "run", "--out", "d.csv"),
        ("hardset", "run", "--top", "0.1", "--out", "hard.csv"),
        ("status", "run"),
        ("report", "run", "--models", "other", "--out", "report"),
    ]
    for command in commands:
        code, _, err = without_torch(*command, cwd=tmp_path)
        assert code == 0, (command, err)
        assert "Traceback" not in err
    assert (tmp_path / "report" / "index.html").exists() and (tmp_path / "report" / "difficulty_transfer.png").exists()


def test_a_command_that_needs_an_extra_says_which_in_one_line(tmp_path):
    code, _, err = without_torch("train", "--data", "digits", "--epochs", "1", "--out", "run", cwd=tmp_path)
    assert code == 2 and err.strip().count("\n") == 0
    assert "pip install 'ensemble-confusion[train]'" in err and not (tmp_path / "run").exists()


def test_the_recorder_needs_no_torch(tmp_path):
    code = BLOCK + (
        "import numpy as np\n"
        "from confusion import Recorder\n"
        "r = Recorder.create('run', n_classes=2, members=1, splits={'val': [0, 1]})\n"
        "with r.member(0) as w:\n"
        "    w.log('val', 1, np.array([[0.9, 0.1], [0.5, 0.5]]), index=[0, 1])\n"
        "    print(w.end_epoch(1))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[1]", done.stderr


def test_torch_made_unimportable_through_sys_modules_too(tmp_path):
    """`sys.modules["torch"] = None` is how many people block a package; scipy.stats trips over it."""
    rng = np.random.default_rng(1)
    np.save(tmp_path / "probs.npy", rng.dirichlet(np.full(4, 0.4), size=(2, 3, 50)).astype(np.float32))
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "from confusion.cli import main\n"
        "sys.argv = ['confusion', 'score', '--probs', 'probs.npy', '--out', 's.csv']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "try:\n"
        "    import torch\n"
        "except ImportError:\n"
        "    print('still unimportable')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "still unimportable" in done.stdout and (tmp_path / "s.csv").exists()


def test_only_commands_that_draw_import_matplotlib(tmp_path):
    """Every command imports the figures module through the report; pyplot (0.3 s) waits for a figure."""
    probe = "import sys, numpy as np; from confusion import cli, figures; from pathlib import Path\n"
    probe += "print('matplotlib' in sys.modules)\n"
    probe += f"print(figures.score_histograms({{'val': np.array([0.1, 0.9])}}, max_score=1.0, unit='bits', directory=Path({str(tmp_path)!r})))\n"
    probe += "print('matplotlib.pyplot' in sys.modules, __import__('matplotlib').get_backend().lower())\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["False", "['fig2_distribution.png', 'fig2_distribution.svg']", "True agg"]
    assert (tmp_path / "fig2_distribution.png").stat().st_size > 0


ROOT = Path(__file__).parent.parent
# The scoring side's tests that need neither torch nor a browser (issue 27: lowest versions).
SCORING_TESTS = ["test_scores.py", "test_store.py", "test_topk.py", "test_analyses.py", "test_cli_score.py", "test_difficulty.py"]


def _pins(path: Path) -> dict[str, str]:
    pairs = (line.split("#")[0].strip().split("==") for line in path.read_text().splitlines())
    return {pair[0].lower(): pair[1] for pair in pairs if len(pair) == 2}


@pytest.mark.slow
def test_the_scoring_side_at_its_lowest_declared_versions(tmp_path):
    """pyproject's lower bounds are real: a fresh venv with every core dependency at its lower
    bound (constraints-lowest.txt) installs the package without changing one of them, and the
    scoring side's torch-free tests pass there."""
    lowest = _pins(ROOT / "constraints-lowest.txt")
    block = re.search(r"^dependencies = \[(.*?)^\]", (ROOT / "pyproject.toml").read_text(), re.M | re.S).group(1)
    declared = {name.lower(): spec for name, spec in re.findall(r'^\s*"([A-Za-z0-9_.-]+)([^"]*)"', block, re.M)}
    assert set(lowest) == set(declared), "constraints-lowest.txt names every core dependency"
    for name, version in lowest.items():
        assert declared[name] == f">={version}", f"{name}=={version} is not the lower bound {name}{declared[name]}"
    source = tmp_path / "source"  # a copy, so the build writes nothing into the repository
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    tools = [f"{name}=={version}" for name, version in _pins(ROOT / "constraints.txt").items() if name in ("pytest", "pytest-timeout", "hypothesis")]
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    done = subprocess.run([*pip, "-c", str(ROOT / "constraints-lowest.txt"), *lowest_pins(lowest), *tools], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run([*pip, str(source)], capture_output=True, text=True)  # no constraint: pip may upgrade, and must not need to
    assert done.returncode == 0, done.stderr[-3000:]
    listed = subprocess.run([python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"], capture_output=True, text=True, check=True)
    installed = {row["name"].lower(): row["version"] for row in json.loads(listed.stdout)}
    assert {name: installed.get(name) for name in lowest} == lowest  # the install changed none of them
    assert "torch" not in installed
    tests = [str(ROOT / "tests" / name) for name in SCORING_TESTS]
    done = subprocess.run(
        [
            python,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "-W",
            "ignore::DeprecationWarning",
            "--basetemp",
            str(tmp_path / "t"),
            *tests,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:]
    assert " passed" in done.stdout.splitlines()[-1], done.stdout[-500:]


def lowest_pins(lowest: dict[str, str]) -> list[str]:
    return [f"{name}=={version}" for name, version in lowest.items()]


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "python").exists(), reason="runs where scripts/setup.sh made .venv")
def test_setup_run_twice_installs_nothing_the_second_time():
    """README: the two commands are safe to run twice. After the test command's own set-up, a
    second `scripts/setup.sh test` finds everything done: no package is installed again."""
    done = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh"), "test"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "installing" not in done.stdout + done.stderr, done.stdout + done.stderr


def test_the_command_line_starts_without_the_heavy_libraries():
    """`confusion --help` stays fast (issue 27: under 0.5 s; bench/startup.py times it) because
    importing the command line imports none of the libraries a command needs: each command
    imports them when it runs."""
    code = "import sys, confusion.cli; print(' '.join(m for m in ('numpy', 'pandas', 'zarr', 'scipy', 'sklearn', 'matplotlib', 'numba', 'torch') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == ""
    done = subprocess.run([sys.executable, "-m", "confusion.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    for command in ("score", "import", "train", "difficulty", "combine", "status", "report", "hardset", "evaluate", "zoo", "mitigate", "demo"):
        assert command in done.stdout, command
