"""Sphinx configuration of butterfly's documentation: ``bash scripts/run.sh docs`` builds it into
``docs/_build/html`` with warnings as errors, executing the tutorials on the data shipped with the package."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("MPLBACKEND", "Agg")

import butterfly  # noqa: E402

project = "butterfly"
author = "the butterfly developers"
copyright = "2026, the butterfly developers"
release = version = butterfly.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]
autosummary_generate = True
autodoc_default_options = {"members": True, "undoc-members": False}
autodoc_typehints = "none"  # the numpydoc Parameters sections say it in words
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
intersphinx_mapping = {}  # no network at build time
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3
nb_execution_mode = "force"  # every tutorial runs at every build, on the shipped data
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_merge_streams = True
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "jupyter_execute", "**.ipynb_checkpoints"]
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]

html_theme = "sphinx_book_theme"
html_title = f"butterfly {version}"
html_theme_options = {"repository_url": "https://github.com/butterfly-omics/butterfly", "use_repository_button": False}
