"""The kernels compile for a real GPU (sm_90, Hopper) even on a machine without one.

The interpreter runs the kernels' Python, which is more permissive than Triton's compiler; this
compiles them ahead of time, down to a cubin with the ptxas bundled with Triton, in a fresh process
(without ``TRITON_INTERPRET``, so that the kernels are real ``JITFunction``s). It also checks that a
contiguous float32 tile is read and written with 128-bit vector accesses, which is what lets the
kernels stream at full memory bandwidth.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, re
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from flowkit.kernels import triton_affine

    CONSTEXPRS = ("INVERSE", "BLOCK_B", "BLOCK_C", "BLOCK_N")
    UNIT_STRIDES = ("sxn", "stn", "srn", "syn", "sgn", "sdn", "dtn", "drn")

    def compile_kernel(kernel, dtype, inverse):
        # As the launcher specialises a contiguous (B, C, H*W) call with H*W divisible by 16:
        # unit innermost strides become constants, pointers and other strides are 16-divisible.
        names = kernel.arg_names
        signature, constexprs, attrs = {}, {}, {}
        values = {"INVERSE": inverse, "BLOCK_B": 1, "BLOCK_C": 1, "BLOCK_N": 2048}
        for i, name in enumerate(names):
            if name in CONSTEXPRS:
                signature[name] = "constexpr"
                constexprs[(i,)] = values[name]
            elif name in UNIT_STRIDES:
                signature[name] = "constexpr"
                constexprs[(i,)] = 1
            elif name.endswith("_ptr"):
                signature[name] = "*fp32" if name in ("partial_ptr", "gl_ptr") else "*" + dtype
                attrs[(i,)] = [["tt.divisibility", 16]]
            elif name == "eps":
                signature[name] = "fp32"
            else:
                signature[name] = "i32"
                if name not in ("B", "C", "n_cb", "n_nb"):
                    attrs[(i,)] = [["tt.divisibility", 16]]
        source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
        return triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})

    report = {}
    for kernel in (triton_affine._affine_forward_kernel, triton_affine._affine_backward_kernel):
        for dtype in ("fp32", "bf16"):
            for inverse in (False, True):
                ptx = compile_kernel(kernel, dtype, inverse).asm["ptx"]
                key = f"{kernel.fn.__name__} {dtype} inverse={inverse}"
                report[key] = {
                    "vector_loads": len(re.findall(r"ld\\.global\\S*\\.v4", ptx)),
                    "vector_stores": len(re.findall(r"st\\.global\\S*\\.v4", ptx)),
                }
    print(json.dumps(report))
    """
)


def test_kernels_compile_for_hopper_with_vector_accesses():
    try:
        import triton.backends.nvidia  # noqa: F401
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
    except ImportError as error:
        pytest.skip(f"this Triton cannot compile for NVIDIA GPUs ahead of time: {error}")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(report) == 8
    for key, counts in report.items():
        # fp32: 8 elements per thread = two 128-bit accesses per tensor; bf16: one.
        per_tensor = 2 if "fp32" in key else 1
        # Forward reads x, shift, raw and writes y; the inverse's backward never reads the shift;
        # the backward reads x, shift, raw, dy and writes dx, dshift, draw.
        if "forward" in key:
            loads, stores = 3, 1
        else:
            loads, stores = (3 if "inverse=True" in key else 4), 3
        assert counts == {"vector_loads": loads * per_tensor, "vector_stores": stores * per_tensor}, key
