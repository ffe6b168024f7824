"""Which implementation of the fused ops runs: the Triton kernels or the PyTorch reference.

Backends:

* ``"torch"``: the PyTorch reference (:mod:`flowkit.kernels.reference`), differentiated by autograd.
  It runs on every device and dtype and is transparent to ``torch.compile`` (Inductor fuses it with
  its neighbours), so it is the choice on CPU.
* ``"triton"``: the fused Triton kernels (``flowkit.kernels.triton_affine``) behind an opaque
  ``torch.library`` custom op with a fused backward. CUDA tensors in float32, float16 or bfloat16;
  CPU tensors only when Triton's interpreter is on (``TRITON_INTERPRET=1`` set before the kernel
  module is imported), which is how the tests execute the kernels without a GPU.
* ``"auto"``: ``"triton"`` for CUDA tensors of a supported dtype when the ``triton`` package is
  installed, ``"torch"`` otherwise. On CPU it is therefore exactly eager PyTorch, never slower.
  Under ``torch.compile`` it is ``"torch"`` on every device: Inductor then fuses the affine map
  with its neighbours itself. The first time it would run the kernels for a device and dtype it
  checks them once against the reference (:mod:`flowkit.kernels.self_check`); if they raise or
  disagree it warns once, saying what failed, and uses ``"torch"`` for that device and dtype from
  then on. A forced ``"triton"`` is not checked: it fails loudly.

An explicit ``backend=`` argument other than ``"auto"`` wins; otherwise the process-wide default
applies. That default starts as the environment variable ``FLOWKIT_KERNEL_BACKEND`` (read once, when
``flowkit.kernels`` is imported; ``"auto"`` if unset) and is changed with :func:`set_backend` or,
for a block of code, :func:`use_backend`. ``torch.compile`` guards on the default, so changing it
recompiles rather than silently reusing a graph built for the other backend.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from flowkit.kernels.reference import TRITON_DTYPES
from flowkit.kernels.self_check import check_triton_kernels

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "TRITON_DTYPES",
    "get_backend",
    "resolve_backend",
    "set_backend",
    "use_backend",
]

BACKENDS = ("auto", "triton", "torch")
"""The accepted backend names."""

ENV_VAR = "FLOWKIT_KERNEL_BACKEND"
"""The environment variable that sets the initial process-wide backend."""


# find_spec answers "is it installed" without importing triton, which takes a second and, once done,
# fixes whether kernels are interpreted: the kernel module is only imported when a kernel runs.
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def _checked(name: object, what: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, BACKENDS))}; got {name!r}")
    return name  # type: ignore[return-value]


_default = _checked(os.environ.get(ENV_VAR, "auto"), f"the environment variable {ENV_VAR}")

# (device, x's dtype, h's dtype) -> whether the kernels passed their self-check there.
_self_checked: dict[tuple[torch.device, torch.dtype, torch.dtype], bool] = {}


def _kernels_trusted(x: Tensor, h: Tensor) -> bool:
    key = (x.device, x.dtype, h.dtype)
    trusted = _self_checked.get(key)
    if trusted is None:
        if x.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            # The check synchronises, which a CUDA graph capture forbids: trust the kernels for
            # this call and check at the first call outside a capture (captures follow warm-ups).
            return True
        failure = check_triton_kernels(x.device, x.dtype, h.dtype)
        trusted = _self_checked[key] = failure is None
        if failure is not None:
            dtypes = str(x.dtype) if x.dtype == h.dtype else f"{x.dtype} x with {h.dtype} h"
            warnings.warn(
                f"flowkit's Triton kernels failed their self-check on {x.device} for {dtypes}: {failure}. "
                f"flowkit now uses the PyTorch reference there (backend='torch') for the rest of this "
                f"process; backend='triton' forces the kernels and shows the failure",
                RuntimeWarning, stacklevel=4,
            )
    return trusted


def get_backend() -> str:
    """The process-wide default backend (``"auto"``, ``"triton"`` or ``"torch"``).

    Example:
        >>> from flowkit.kernels import get_backend, use_backend
        >>> with use_backend("torch"):
        ...     get_backend()
        'torch'
    """
    return _default


def set_backend(name: str) -> None:
    """Set the process-wide default backend used when a call passes ``backend="auto"``.

    Args:
        name: ``"auto"``, ``"triton"`` or ``"torch"``.

    Example:
        >>> from flowkit.kernels import get_backend, set_backend
        >>> previous = get_backend()
        >>> set_backend("torch")
        >>> get_backend()
        'torch'
        >>> set_backend(previous)
    """
    global _default
    _default = _checked(name, "set_backend: the backend")


@contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Use ``name`` as the process-wide default backend inside a ``with`` block, then restore it.

    Args:
        name: ``"auto"``, ``"triton"`` or ``"torch"``.

    Example:
        >>> import torch
        >>> from flowkit.kernels import fused_affine, use_backend
        >>> x, h = torch.randn(2, 3, 4, 4), torch.randn(2, 6, 4, 4)
        >>> with use_backend("torch"):
        ...     y, logdet = fused_affine(x, h)
        >>> y.shape
        torch.Size([2, 3, 4, 4])
    """
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def resolve_backend(backend: str, x: Tensor, h: Tensor, *, compiling: bool = False) -> str:
    """The backend that will run for these tensors: ``"triton"`` or ``"torch"``.

    ``backend`` is the argument of the call; ``"auto"`` defers to the process-wide default, and a
    default of ``"auto"`` picks Triton for CUDA tensors of a supported dtype when Triton is installed
    and the kernels passed their one-time self-check on that device for these dtypes (run here, the
    first time; a failure warns once and picks the reference from then on), except while
    ``torch.compile`` traces (``compiling=True``): there it picks the reference, which Inductor
    fuses with the neighbouring ops into one kernel, where the opaque Triton op would cost copies
    and a separate pass.
    Forcing ``"triton"`` for a dtype it does not support, or without Triton installed, raises. (Whether
    a CPU tensor may run the kernels, i.e. whether the interpreter is on, is checked where the kernel
    is launched.)

    Args:
        backend: the ``backend`` argument of the call.
        x: the call's input.
        h: the call's shift and raw scale.
        compiling: whether ``torch.compile`` is tracing the call
            (:func:`torch.compiler.is_compiling`).

    Returns:
        ``"triton"`` or ``"torch"``.

    Example:
        >>> import torch
        >>> from flowkit.kernels import resolve_backend
        >>> resolve_backend("auto", torch.randn(2, 3), torch.randn(2, 6))   # CPU tensors
        'torch'
    """
    name = _checked(backend, "backend") if backend != "auto" else _default
    if name == "auto":
        if (
            not compiling and x.is_cuda and _TRITON_INSTALLED and x.dtype in TRITON_DTYPES
            and h.dtype in TRITON_DTYPES and _kernels_trusted(x, h)
        ):
            return "triton"
        return "torch"
    if name == "triton":
        if not _TRITON_INSTALLED:
            raise RuntimeError(
                "the 'triton' backend needs the triton package, which is not installed "
                "(pip install triton on Linux), or use backend='torch'"
            )
        for what, t in (("x", x), ("h", h)):
            if t.dtype not in TRITON_DTYPES:
                raise TypeError(
                    f"the 'triton' backend supports float32, float16 and bfloat16 tensors; {what} is "
                    f"{t.dtype} (use backend='torch' for it)"
                )
    return name
