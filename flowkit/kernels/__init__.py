"""Fused element-wise ops behind the coupling layers.

``fused_affine`` is the primitive, ``fused_affine_coupling`` the same map written straight into a
coupling's concatenated output; the PyTorch reference in :mod:`flowkit.kernels.reference` is their
specification.

**Choosing a backend.** :func:`fused_affine` runs either the **PyTorch reference** (``"torch"``) or
the **Triton kernels** (``"triton"``, one fused kernel forward, one backward, behind the opaque custom op
``torch.ops.flowkit.fused_affine``). The default, ``"auto"``, picks Triton for CUDA tensors
(float32/float16/bfloat16) when the ``triton`` package is installed, and the reference everywhere
else: on CPU the default path is plain eager PyTorch, never slower than it, and ``torch.compile``
fuses it with the surrounding ops. Force a backend per call (``backend="torch"``), for the whole
process (:func:`set_backend`, or ``FLOWKIT_KERNEL_BACKEND=torch`` in the environment before
``import flowkit``) or for a block (``with use_backend("triton"): ...``). The kernels run on CPU
only under Triton's interpreter (``TRITON_INTERPRET=1`` set before ``flowkit.kernels.triton_affine``
is imported), which is for testing; elsewhere forcing ``"triton"`` on CPU tensors is an error.
``"auto"`` checks the kernels once per device and dtype against the reference before it first
uses them (:func:`flowkit.kernels.self_check.check_triton_kernels`) and keeps to the reference,
with one warning, where they fail; a forced ``"triton"`` fails loudly instead.
"""

from flowkit.kernels.affine import fused_affine, fused_affine_coupling
from flowkit.kernels.backend import get_backend, resolve_backend, set_backend, use_backend
from flowkit.kernels.reference import affine_backward_formula

__all__ = [
    "affine_backward_formula",
    "fused_affine",
    "fused_affine_coupling",
    "get_backend",
    "resolve_backend",
    "set_backend",
    "use_backend",
]
