"""The Sphinx documentation builds with warnings as errors and every reference resolved, and the
examples on its pages run (the doctest builder)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def sphinx_main(argv: list[str]) -> int:
    """``sphinx-build ARGV`` in a child process: the tutorials it runs, and the doctest builder,
    change process-wide state (stdout and display hooks, matplotlib, torch's thread count) that
    would leak into the rest of the suite (it broke every later doctest's output capture)."""
    return subprocess.run([sys.executable, "-m", "sphinx", *argv], check=False).returncode


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The HTML build, which runs the tutorials in examples/ (sphinx-gallery), even those whose
    output an earlier build left in docs/tutorials; the doctest builder reuses its parsed pages."""
    root = tmp_path_factory.mktemp("docs")
    status = sphinx_main(["-W", "-n", "--keep-going", "-q", "-b", "html", "-d", str(root / "doctrees"),
                          "-D", "sphinx_gallery_conf.run_stale_examples=1", str(DOCS), str(root / "html")])
    return root, status


def test_html_builds_without_warnings_and_with_every_reference_resolved(built):
    root, status = built
    assert status == 0, "sphinx-build -W -n failed; run `sphinx-build -W -n -b html docs docs/_build` to see why"
    assert (root / "html" / "api" / "layers.html").exists()


def test_tutorials_ran_and_show_their_figures(built):
    root, _ = built
    for name, figures in [("01_conditional_two_moons", 2), ("02_your_own_layer", 1),
                          ("03_multiscale_image_flow", 3), ("04_llflow_enhance_and_evaluate", 1),
                          ("05_spline_and_autoregressive_flows", 2), ("06_memory_saving_backprop", 1)]:
        page = (root / "html" / "tutorials" / f"{name}.html").read_text()
        assert page.count(f'src="../_images/sphx_glr_{name}_') == figures, name


def test_math_is_served_from_the_built_site(built):
    """No page loads a script from the network: MathJax comes from the site's own _static/."""
    root, _ = built
    page = (root / "html" / "concepts.html").read_text()
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', page)
    assert any("mathjax" in src for src in scripts), "concepts.html should load MathJax"
    assert not [src for src in scripts if "//" in src], scripts
    assert (root / "html" / "_static" / "mathjax" / "tex-chtml.js").exists()


def test_doctest_builder_runs_the_pages_examples(built):
    root, _ = built
    status = sphinx_main(["-n", "-q", "-b", "doctest", "-d", str(root / "doctrees"), str(DOCS),
                          str(root / "doctest")])
    output = (root / "doctest" / "output.txt").read_text()
    assert status == 0, output
    assert re.search(r"^\s+0 failures in tests$", output, re.M), output
