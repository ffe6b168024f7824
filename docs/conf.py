"""Sphinx configuration for flowkit's documentation (built with warnings as errors)."""

from __future__ import annotations

import flowkit

project = "flowkit"
author = "the flowkit developers"
release = flowkit.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx.ext.intersphinx",
    "sphinx.ext.doctest",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Members inherited from torch.nn.Module would drown the API in torch's own docs.
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
intersphinx_mapping = {}
nitpicky = False
html_theme = "furo"
html_title = f"flowkit {release}"
exclude_patterns = ["_build"]
