"""The house rules, run by the test command: ruff (lint and format), the import contracts
(pyproject's [tool.importlinter]), numpydoc sections and types on the public API, `__all__` in
every public module, no import of another module's private name, and modules under 600 lines.
Each rule is a tool; a test here fails when the code breaks it, and one test proves that the
import contracts do catch a planted cycle and a planted torch import."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "confusion"
BIN = Path(sys.executable).parent
MAX_LINES = 600
# The public API whose docstrings numpydoc validates and whose annotations mypy checks.
PUBLIC_API = [
    "confusion.errors",
    "confusion.events",
    "confusion.scores",
    "confusion.store",
    "confusion.store.format",
    "confusion.store.run",
    "confusion.store.reads",
    "confusion.store.commit",
    "confusion.store.layouts",
    "confusion.store.locks",
    "confusion.store.embeddings",
    "confusion.store.splits",
    "confusion.runscores",
    "confusion.neighbours",
    "confusion.views",
    "confusion.combined",
    "confusion.difficulty",
    "confusion.difficulty.base",
    "confusion.difficulty.catalog",
    "confusion.report",
    "confusion.report.inputs",
]


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "egg-info" not in str(p))


def dotted(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, **kwargs)


def test_ruff_finds_nothing_and_the_code_is_formatted():
    lint = run([str(BIN / "ruff"), "check", "."])
    assert lint.returncode == 0, lint.stdout + lint.stderr
    formatted = run([str(BIN / "ruff"), "format", "--check", "."])
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


def test_the_import_contracts_hold():
    result = run([str(BIN / "lint-imports"), "--no-cache"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    "module, planted, contract",
    [
        # scores is imported by runscores: importing runscores back, even inside a function, is a cycle.
        ("scores.py", "\n\ndef _planted():\n    from . import runscores\n", "No import cycles"),
        # the store reading torch, inside a function as the old cycles hid it
        ("store/format.py", "\n\ndef _planted():\n    import torch\n", "The scoring side never reaches the torch side"),
    ],
)
def test_a_planted_cycle_or_torch_import_breaks_the_contracts(tmp_path, module, planted, contract):
    copy = tmp_path / "src" / "confusion"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / module, "a", encoding="utf-8") as handle:
        handle.write(planted)
    environment = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    result = run([str(BIN / "lint-imports"), "--no-cache", str(ROOT / "pyproject.toml")], env=environment)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts")[-1]
    assert contract in broken and str(tmp_path) not in result.stderr, result.stdout + result.stderr


def test_every_public_module_declares_all():
    missing = []
    for path in modules():
        name = dotted(path)
        if any(part.startswith("_") for part in name.split(".")[1:]) or name.endswith("__main__"):
            continue  # private modules (confusion._files) and `python -m` entry points
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if not any(isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets) for node in tree.body):
            missing.append(name)
    assert not missing, f"modules without __all__: {missing}"


def test_no_module_imports_another_modules_private_name():
    """A `_name` is its module's own. The package's private modules (`_files`, `_kernels`, ...)
    are the package's helpers: importing one is importing a module, not a private name."""
    found = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("confusion")):
                base = path.parent if node.level else PACKAGE.parent
                for _ in range(max(0, node.level - 1)):
                    base = base.parent
                base = base.joinpath(*(node.module or "").split(".")) if node.module else base
                private = [
                    a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__") and not (base / f"{a.name}.py").is_file()
                ]
                if private:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {private}")
    assert not found, "\n".join(found)


def test_no_module_is_over_600_lines():
    long = {str(p.relative_to(ROOT)): n for p in modules() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (a sign of two jobs in one): {long}"


def test_the_run_store_chooses_its_layout_once():
    """`keep ==` branches live in the layout classes, nowhere in the store's run module."""
    text = (PACKAGE / "store" / "run.py").read_text(encoding="utf-8")
    assert "keep ==" not in text and "keep !=" not in text


def test_the_public_api_has_numpydoc_sections():
    """numpydoc's validation with pyproject's [tool.numpydoc_validation] checks, on the public API.
    A property is documented as an attribute (numpydoc's own convention), which the AST-based
    hook cannot tell from a method: its "No Returns section" finding is dropped."""
    from numpydoc.hooks.validate_docstrings import parse_config, process_file

    config = parse_config(ROOT)
    findings = []
    for path in public_files():
        properties = {
            node.lineno
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.FunctionDef) and any(getattr(d, "id", None) == "property" for d in node.decorator_list)
        }
        for where, name, check, description in process_file(str(path), config):
            line = int(where.rsplit(":", 1)[1])
            if not (check == "RT01" and (line in properties or line - 1 in properties)):
                findings.append(f"{where} {name}: {check} {description}")
    assert not findings, "\n".join(findings)


def test_the_public_api_type_checks():
    result = run([str(BIN / "mypy"), *[str(p) for p in public_files()]])
    assert result.returncode == 0, result.stdout + result.stderr


def public_files() -> list[Path]:
    files = []
    for name in PUBLIC_API:
        path = PACKAGE.parent.joinpath(*name.split("."))
        files.append(path / "__init__.py" if path.is_dir() else path.with_suffix(".py"))
    return files
