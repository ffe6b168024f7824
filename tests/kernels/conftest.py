"""Run the Triton kernels where this machine can: on CUDA if it has a GPU, else in Triton's interpreter.

``triton.jit`` decides whether a kernel is interpreted when it decorates it, i.e. when
:mod:`flowkit.kernels.triton_affine` is imported. So ``TRITON_INTERPRET=1`` is set here, before any
test of this directory imports it, and if something imported the module earlier (a doctest collected
first, say) it is reloaded so that its kernels are re-decorated as interpreted ones.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

# importlib import mode: the helper module beside this file needs its directory on the path.
sys.path.insert(0, str(Path(__file__).parent))

from kernel_checks import KERNEL_DEVICE  # noqa: E402

if KERNEL_DEVICE == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"
    _loaded = sys.modules.get("flowkit.kernels.triton_affine")
    if _loaded is not None and not _loaded.is_interpreted():
        importlib.reload(_loaded)


@pytest.fixture(scope="session")
def device() -> str:
    """Where the kernel tests put their tensors."""
    return KERNEL_DEVICE


@pytest.fixture(scope="session")
def kernels() -> ModuleType:
    """:mod:`flowkit.kernels.triton_affine`, checked to really be interpreted when running on the CPU."""
    from flowkit.kernels import triton_affine

    if KERNEL_DEVICE == "cpu":
        assert triton_affine.is_interpreted(), "the kernels are compiled, not interpreted, on a CPU-only run"
    return triton_affine
