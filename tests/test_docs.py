"""The Sphinx documentation builds with warnings as errors."""

from __future__ import annotations

from pathlib import Path

from sphinx.cmd.build import main as sphinx_main

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_docs_build_without_warnings(tmp_path):
    status = sphinx_main(["-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(tmp_path / "html")])
    assert status == 0, "sphinx-build -W failed; run `sphinx-build -W -b html docs docs/_build` to see why"
    assert (tmp_path / "html" / "api" / "layers.html").exists()
