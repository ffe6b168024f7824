"""Run the Triton kernels where this machine can: on CUDA if it has a GPU, else in Triton's interpreter.

Triton decides whether a ``@triton.jit`` function is interpreted when it decorates it: for its own
``triton.language`` helpers (``tl.sigmoid``, ``tl.sum``) that is when ``triton`` is first imported,
for flowkit's kernels when :mod:`flowkit.kernels.triton_affine` is imported. So
``TRITON_INTERPRET=1`` is set here, when pytest collects this directory, before any of it imports
Triton. If something imported Triton earlier in the session (e.g. by creating a ``torch.compile``
function at import time) that cannot be undone, and the kernel tests fail with instructions instead
of with an obscure interpreter error.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

import pytest
from kernel_checks import KERNEL_DEVICE

_TRITON_IMPORTED_TOO_EARLY = "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1"

if KERNEL_DEVICE == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture(scope="session")
def device() -> str:
    """Where the kernel tests put their tensors."""
    return KERNEL_DEVICE


@pytest.fixture(scope="session")
def kernels() -> ModuleType:
    """:mod:`flowkit.kernels.triton_affine`, checked to really be interpreted when running on the CPU."""
    pytest.importorskip("triton", reason="Triton is not installed (it is a Linux-only dependency)")
    if KERNEL_DEVICE == "cpu" and _TRITON_IMPORTED_TOO_EARLY:
        pytest.fail(
            "triton was imported before tests/kernels/conftest.py could set TRITON_INTERPRET=1, so its "
            "kernels are compiled for a GPU; run the tests with TRITON_INTERPRET=1 in the environment"
        )
    from flowkit.kernels import triton_affine

    if KERNEL_DEVICE == "cpu":
        assert triton_affine.is_interpreted(), "the kernels are compiled, not interpreted, on a CPU-only run"
    return triton_affine
