"""The kernels compile for a real GPU (sm_90, Hopper) even on a machine without one.

The interpreter runs the kernels' Python, which is more permissive than Triton's compiler; this
compiles them ahead of time, down to a cubin with the ptxas bundled with Triton, through
``benchmarks/kernel_report.py --quick``: each kernel, both directions, float32 and bfloat16, as the
launchers specialise a contiguous launch, for a plane the JIT marks divisible by 16 and for one it
does not (100x150). It runs in a fresh process without ``TRITON_INTERPRET``, so that the kernels
are real ``JITFunction``s. It fails on a compile error or a spill, and checks that every tile is
read and written with 128-bit vector accesses, which is what lets the kernels stream at full
memory bandwidth.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
    # Each kernel, both directions, both dtypes, the two planes.
    assert len(rows) == 16, [row["variant"] for row in rows]
    for row in rows:
        key = f"{row['kernel']} {row['dtype']} {row['variant']} at {row['shape']}"
        assert row["compiled"], f"{key}: {row['error']}"
        assert row["spills"] == 0, f"{key}: {row['spills']} bytes of local memory"
        # 8 elements per thread: two 128-bit accesses per tensor in float32, one in bfloat16.
        per_tensor = 2 if row["dtype"] == "float32" else 1
        # Forward reads x, shift, raw and writes y; the inverse's backward never reads the shift;
        # the backward reads x, shift, raw, dy and writes dx, dshift, draw. Besides, one 32-bit
        # access per sample: the forward's log-det partial, the backward's log-det gradient.
        if row["kernel"] == "forward":
            loads, stores = {"128": 3 * per_tensor}, {"128": per_tensor, "32": 1}
        else:
            tile_loads = 3 if row["direction"] == "inverse" else 4
            loads, stores = {"128": tile_loads * per_tensor, "32": 1}, {"128": 3 * per_tensor}
        assert (row["loads"], row["stores"]) == (loads, stores), key
    assert done.returncode == 0, done.stderr[-3000:]
