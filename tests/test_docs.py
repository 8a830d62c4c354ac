"""The documentation site builds with `mkdocs build --strict` (a broken link, a missing page or
an API reference that does not resolve fails it), has every tutorial, and shows code that the
suite runs: each tutorial embeds its example files whole, and tests/test_examples.py runs them."""

import os
import re
import subprocess
import sys
from pathlib import Path

from .test_examples import CHECKS

ROOT = Path(__file__).parent.parent
TUTORIALS = ["pytorch.md", "lightning.md", "huggingface.md", "text-and-features.md", "imagenet-scale.md"]


def test_the_site_builds_strict_with_every_tutorial_and_the_api_reference(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    done = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name in TUTORIALS:
        assert (tmp_path / "site" / "tutorials" / name.removesuffix(".md") / "index.html").exists(), name
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("confusion_scores", "RunStore", "difficulty_scores", "MemberWriter", "fit_combined"):
        assert name in api, f"the API reference lacks {name}"
    assert "$\\mathdefault" not in api


def test_every_example_a_page_embeds_is_run_by_the_suite():
    embedded = set()
    for page in (ROOT / "docs").rglob("*.md"):
        embedded |= set(re.findall(r'--8<-- "examples/([^"]+)"', page.read_text()))
    assert {"pytorch_loop.py", "lightning_members.py", "lightning_ddp.py", "huggingface_trainer.py"} <= embedded
    assert embedded <= set(CHECKS), f"examples shown in the docs but not run by tests/test_examples.py: {embedded - set(CHECKS)}"


def _command_lines(text: str) -> list[str]:
    """The `confusion ...` lines of the bash blocks of a page, comments and `...` dropped."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("confusion ") and "..." not in line:
                lines.append(line)
    return lines


def test_every_command_line_in_the_readme_and_the_docs_names_real_commands_and_options():
    """The tutorials' command lines (text, features, ImageNet scale, ...) stay true to the
    command line: every command exists and every option it gives is one of that command's."""
    import shlex

    import typer.main

    from confusion.cli import app

    group = typer.main.get_command(app)
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    checked = 0
    for page in pages:
        for line in _command_lines(page.read_text()):
            words = shlex.split(line)
            command = group.commands.get(words[1])
            assert command is not None, f"{page.name}: {line}: no command {words[1]!r}"
            options = {name for parameter in command.params for name in getattr(parameter, "opts", [])}
            for word in words[2:]:
                if word.startswith("--"):
                    assert word.split("=")[0] in options, f"{page.name}: {line}: {words[1]} has no option {word}"
            checked += 1
    assert checked >= 30
