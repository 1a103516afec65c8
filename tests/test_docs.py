"""The documentation site builds with warnings as errors, its tutorials executed on the shipped data (what
``bash scripts/run.sh docs`` does, into a temporary folder here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_documentation_builds_and_runs_its_tutorials(tmp_path):
    source = tmp_path / "docs"
    shutil.copytree(DOCS, source, ignore=shutil.ignore_patterns("_build", "jupyter_execute", "generated"))
    # the pages include files from beside docs/ (benchmark tables, the changelog)
    for name in ("benchmarks", "CHANGELOG.md"):
        origin = DOCS.parent / name
        (tmp_path / name).symlink_to(origin, target_is_directory=origin.is_dir())
    out = tmp_path / "html"
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(source), str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-6000:]
    for page in ("index", "installation", "benchmarks", "api/index", "tutorials/rna_atac", "tutorials/chain"):
        assert (out / f"{page}.html").is_file(), page
    tutorial = (out / "tutorials" / "rna_atac.html").read_text()
    assert "AMI" in tutorial and "Traceback" not in tutorial  # the executed cells' outputs are on the page
    assert (out / "api" / "generated" / "butterfly.Butterfly.html").is_file()
