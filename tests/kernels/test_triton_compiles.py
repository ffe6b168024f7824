"""The kernels compile for a real GPU (sm_90, Hopper) even on a machine without one.

The interpreter runs the kernels' Python, which is more permissive than Triton's compiler; this
compiles them ahead of time, down to a cubin with the ptxas bundled with Triton, through
``benchmarks/kernel_report.py --quick``: each kernel, both directions, float32 and bfloat16, as the
launchers specialise a contiguous launch, for a plane the JIT marks divisible by 16, one it does not
(100x150), and one that is no multiple of 16 bytes (50x75, LOL's /8 level). It runs in a fresh
process without ``TRITON_INTERPRET``, so that the kernels are real ``JITFunction``s. It fails on a
compile error or a spill, and checks the width of every global access: 128 bits for x, the output
and their gradients, and for h's halves wherever the plane allows it, which is what lets the
kernels stream at full memory bandwidth.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_kernels_compile_for_hopper_without_spills_and_with_vector_accesses(tmp_path):
    pytest.importorskip("triton", reason="Triton is not installed (it is a Linux-only dependency)")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # This checkout's flowkit, whatever is installed.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    rows_file = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "kernel_report.py"), "--quick", "--targets", "sm_90",
         "--dtypes", "float32", "bfloat16", "--json", str(rows_file)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert rows_file.exists(), done.stderr[-3000:]
    rows = json.loads(rows_file.read_text())
    # Each kernel, both directions, both dtypes, the three planes.
    assert len(rows) == 24, [row["variant"] for row in rows]
    for row in rows:
        key = f"{row['kernel']} {row['dtype']} {row['variant']} at {row['shape']}"
        assert row["compiled"], f"{key}: {row['error']}"
        assert row["spills"] == 0, f"{key}: {row['spills']} bytes of local memory"
        # Flat tiles (a sample's channels as one row) exactly where the planes are misaligned.
        assert ("flat" in row["variant"]) == row["shape"].endswith("50x75"), key
        assert (row["loads"], row["stores"]) == expected_accesses(row), key
    assert done.returncode == 0, done.stderr[-3000:]


def expected_accesses(row: dict) -> tuple[dict[str, int], dict[str, int]]:
    """Global loads and stores by width (in bits, as strings: JSON keys) for a --quick variant."""
    bits = 32 if row["dtype"] == "float32" else 16
    plane = math.prod(int(size) for size in row["shape"].split("x")[2:])
    # x, the output and their gradients: 128-bit at every plane (at 50x75 through flat tiles). The
    # cross layout's h halves: a vector lines up in x, the shift and the raw scale of its elements
    # only if it divides the plane (x's element (c, n) is at cN + n, its shift at 2cN + n, its raw
    # scale N further), so at most gcd(N, 8) elements: 128-bit at 80x80 and 100x150; at 50x75
    # 64-bit in float32 and 32-bit in bfloat16, the most any tiling gets there.
    x_width, h_width = 128, min(128, math.gcd(plane, 8) * bits)

    def tiles(*widths: int) -> Counter:
        counts: Counter = Counter()
        for width in widths:   # one tile tensor each, 8 elements per thread
            counts[str(width)] += 8 * bits // width
        return counts

    # Besides, one 32-bit access per sample: the forward's log-det partial, the backward's log-det
    # gradient. The inverse's backward never reads the shift.
    per_sample = Counter({"32": 1})
    if row["kernel"] == "forward":
        loads, stores = tiles(x_width, h_width, h_width), tiles(x_width) + per_sample
    else:
        shift = (h_width,) if row["direction"] == "forward" else ()
        loads, stores = tiles(x_width, x_width, h_width, *shift) + per_sample, tiles(x_width, h_width, h_width)
    return dict(loads), dict(stores)
