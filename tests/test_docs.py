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
