"""pytest settings for this package's doctests: the Triton kernel module needs ``triton`` to import.

Triton is a Linux-only dependency; where it is not installed (macOS, Windows) the doctests of
:mod:`flowkit.kernels.triton_affine` are not collected instead of failing the collection.
"""

from __future__ import annotations

import importlib.util

collect_ignore = [] if importlib.util.find_spec("triton") is not None else ["triton_affine.py"]
