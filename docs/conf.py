"""Sphinx configuration for flowkit's documentation.

Built by ``tests/test_docs.py`` with warnings as errors and nitpicky references (``-W -n``), and
with the doctest builder. Everything here works offline: math is rendered by a MathJax copy that
a Python package ships, and nothing is fetched at build time.
"""

from __future__ import annotations

import datetime
import importlib
import sys
import types
from pathlib import Path

import flowkit

project = "flowkit"
author = "the flowkit developers"
copyright = f"2026-{datetime.date.today().year}, {author}" if datetime.date.today().year > 2026 else f"2026, {author}"
release = flowkit.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # Serves MathJax 3 from the built site's _static/ instead of a CDN.
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
    "sphinx.ext.doctest",
    "sphinx_gallery.gen_gallery",
    "benchmark_results",  # docs/_ext: benchmarks/results/*.md rendered on the performance page
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Types go into the parameter list only beside a description: a class that documents its fields
# as Attributes would otherwise also show a bare, undescribed Parameters list.
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Members inherited from torch.nn.Module would drown the API in torch's own docs.
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# The tutorials: the numbered scripts in examples/, run at build time (each in well under a
# minute on a CPU) and rendered with their output and figures into tutorials/ (generated, not
# committed). The other scripts there are command-line tools, not tutorials.
sys.path.insert(0, str(Path(__file__).parent / "_ext"))
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "tutorials",
    "filename_pattern": r"/\d\d_",
    "ignore_pattern": r"(^|/)(?!\d\d_)[^/]+\.py$",
    "within_subsection_order": "FileNameSortKey",
    "reset_modules": ("matplotlib", "gallery_reset.reset_torch"),
    "download_all_examples": False,
    "write_computation_times": False,
    "show_memory": False,
    "remove_config_comments": True,
    "min_reported_time": 1000,
}
html_theme = "furo"
html_title = f"flowkit {release}"
exclude_patterns = ["_build", "_ext"]

# Every reference to flowkit's own objects must resolve. The builds have no network, so there is
# no intersphinx: references to other projects' types are listed here, and only those.
nitpicky = True
nitpick_ignore_regex = [
    ("py:.*", r"(torch|numpy|np|pathlib|os|collections\.abc|typing|contextlib|dataclasses)(\..+)?"),
    ("py:.*", r"nn\.Module|Tensor|Path|Generator|Callable|Sequence|Iterable|Iterator|Mapping"),
]

# The doctest builder runs the examples written as ``.. testcode::``/``.. doctest::`` on the guide
# pages. The ``>>>`` examples in docstrings are run by ``pytest --doctest-modules`` in their own
# module's namespace, which is where they are written to run; the doctest builder would run all
# of a page's docstrings in one shared namespace instead.
doctest_test_doctest_blocks = ""


def _python_object(path: str, module: str | None = None, cls: str | None = None):
    """The object ``path`` names, as Python would resolve it inside ``module`` (and ``cls``)."""
    parts = path.split(".")
    if parts[0] == "flowkit":
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            parts = parts[cut:]
            break
        else:
            return None
    elif module and module.startswith("flowkit"):
        try:
            namespace = importlib.import_module(module)
        except ImportError:
            return None
        scopes = [namespace]
        if cls:
            scopes.insert(0, _python_object(cls, module))
        for scope in scopes:
            if scope is not None and hasattr(scope, parts[0]):
                obj = getattr(scope, parts[0])
                parts = parts[1:]
                break
        else:
            return None
    else:
        return None
    for name in parts:
        if isinstance(obj, type) and isinstance(obj.__dict__.get(name), classmethod):
            obj = obj.__dict__[name].__func__
        else:
            obj = getattr(obj, name, None)
        if obj is None:
            return None
    return getattr(obj, "__func__", obj)


def _documented_objects(env) -> dict[int, tuple[object, str]]:
    """Every documented flowkit class, function, method, property and module, keyed by identity."""
    documented = {}
    for name, entry in env.get_domain("py").objects.items():
        if not name.startswith("flowkit") or entry.aliased:
            continue
        obj = _python_object(name)
        if isinstance(obj, (type, property, types.FunctionType, types.ModuleType)):
            documented.setdefault(id(obj), (obj, name))
    return documented


def _resolve_by_object(app, env, node, contnode):
    """Resolve a reference to a flowkit object by what it names, not by how it is spelled.

    Objects are documented under one name each (``flowkit.core.Sequential``,
    ``flowkit.layers.Split``), but docstrings refer to them as users import them
    (``flowkit.Sequential``, ``flowkit.models.llflow.data.read_image``) or by the names visible in their own
    module (``LLFlow`` in ``flowkit.models.llflow.pretrained``). A reference the Python domain
    cannot find is resolved like Python would resolve it there, and linked to the documented name
    of the same object; one that names nothing documented stays an error.
    """
    if node.get("refdomain") != "py":
        return None
    obj = _python_object(node["reftarget"], node.get("py:module"), node.get("py:class"))
    domain = env.get_domain("py")
    if obj is None:
        # A name the module imports only inside a function (``LLFlow`` in the CLI): link it when
        # exactly one documented flowkit object has that name.
        suffix = "." + node["reftarget"]
        names = {name for name, entry in domain.objects.items()
                 if name.startswith("flowkit") and name.endswith(suffix) and not entry.aliased}
        if len(names) != 1:
            return None
        (name,) = names
    else:
        if not hasattr(env, "_flowkit_documented"):
            env._flowkit_documented = _documented_objects(env)
        found = env._flowkit_documented.get(id(obj))
        if found is None or found[0] is not obj:
            return None
        name = found[1]
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], name, node, contnode)


def _method_owner(obj) -> type | None:
    """The class a function was defined in, from its qualified name."""
    module = getattr(obj, "__module__", None) or ""
    owner = _python_object(obj.__qualname__.rpartition(".")[0], module) if module.startswith("flowkit") else None
    return owner if isinstance(owner, type) else None


def _base_method(obj, name: str):
    """The nearest flowkit base class's documented ``name`` method, for a layer that has none."""
    owner = _method_owner(obj)
    for base in owner.__mro__[1:] if owner else ():
        method = base.__dict__.get(name)
        if base.__module__.startswith("flowkit") and getattr(method, "__doc__", None):
            return base, method
    return None


def _keep_forward_inverse(app, what, name, obj, skip, options):
    """Show every layer's ``forward`` and ``inverse``, documented or not (the contract covers them)."""
    if name in ("forward", "inverse") and callable(obj) and _base_method(obj, name):
        return False
    return None


def _contract_docstring(app, what, name, obj, options, lines):
    """An undocumented ``forward``/``inverse`` gets its base class's contract, linked."""
    short = name.rpartition(".")[2]
    if what != "method" or short not in ("forward", "inverse") or any(line.strip() for line in lines):
        return
    found = _base_method(obj, short)
    if found:
        base, method = found
        summary = method.__doc__.strip().split("\n\n")[0]
        lines[:] = [summary, "", f"(The contract of :meth:`{base.__module__}.{base.__qualname__}.{short}`.)"]


def _public_bases(app, name, obj, options, bases):
    """Show a private base class (``_Conditioned``) as the public classes it derives from."""
    public = []
    for base in bases:
        queue = [base]
        while queue:
            cls = queue.pop(0)
            if cls.__name__.startswith("_"):
                queue[:0] = list(cls.__bases__)
            elif cls not in public:
                public.append(cls)
    bases[:] = public


def setup(app):
    app.connect("missing-reference", _resolve_by_object)
    app.connect("autodoc-skip-member", _keep_forward_inverse)
    app.connect("autodoc-process-docstring", _contract_docstring)
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("build-finished", importlib.import_module("gallery_reset").restore_threads)
