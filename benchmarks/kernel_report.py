"""Compile every Triton kernel flowkit launches for NVIDIA GPUs, ahead of time and without a GPU.

The tests run the kernels in Triton's interpreter, which executes their Python and never runs the
compiler: a kernel it accepts can still fail to compile, spill registers to local memory, or read
memory one scalar at a time on a real GPU. This script runs the real compiler, down to a cubin
(with the ``ptxas`` that the triton wheel ships), for sm_80 (A100) and sm_90 (H100), and reports
for each compiled variant its registers, local memory (spills), shared memory and the width of
every global load and store in its PTX.

The variants are the ones a GPU run would compile, found by running flowkit's own launchers:
:func:`~flowkit.kernels.triton_affine.affine_forward` (forward and inverse) and
:func:`~flowkit.kernels.triton_affine.affine_backward` (both directions; ``dx`` and ``dh``, ``dx``
only, ``dh`` only) are called on CPU tensors of the shapes LLFlow runs (training, LOL, 1080p and 4K
levels; the coupling's half and the injector's whole tensor) and of vectors, in every dtype the
kernels accept and three memory layouts (contiguous; ``channels_last``; ``channel_split``, the
second half of a channel split as :func:`~flowkit.kernels.fused_affine_coupling` passes it, writing
into the joined output), with the launch replaced by a recorder and the target GPU's SM count given
to the launch-geometry rule (so the tile shapes are the ones that GPU would get). The recorded
arguments go through Triton's own JIT specialisation (pointers and integers divisible by 16 marked
so, integers equal to 1 made constants), which decides whether the compiler can prove the accesses
aligned and contiguous enough to vectorise. Launches that specialise alike are compiled once; each
row names the first shape that produced it and how many calls share it.

Usage::

    python benchmarks/kernel_report.py                       # everything (15 min on 2 cores, cold cache)
    python benchmarks/kernel_report.py --targets sm_90 --dtypes float32 bfloat16 \\
        --layouts contiguous --shapes train --json rows.json   # a subset, rows as a JSON list

The summary table goes to ``<out>/kernel_report.md`` and ``.json`` (``--out``, default
``benchmarks/results``; nothing is written there when a subset is asked for, unless ``--out`` is
given); ``--json FILE`` writes the rows as a JSON list. Exits with status 1 when a variant fails to
compile or spills. Must run without ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from _timing import RESULTS, environment, markdown_table, write_results
from coupling import full_cases

from flowkit.kernels import triton_affine

TARGETS = {"sm_80": (80, 108), "sm_90": (90, 132)}
"""Target name: (compute capability, SM count of the GPU whose launch geometry is reproduced:
A100 and H100 SXM)."""

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
LAYOUTS = ("contiguous", "channels_last", "channel_split")
DIRECTIONS = {False: "forward", True: "inverse"}
NEEDS = {(True, True): "dx+dh", (True, False): "dx", (False, True): "dh"}
KERNELS = {"_affine_forward_kernel": "forward", "_affine_backward_kernel": "backward"}
# A density flow's coupling on 2-D and 10-D data, batch 512: half the features each; vectors tile
# over the batch instead of over space.
VECTOR_SHAPES = {"vectors": ((512, 1), (512, 5))}
# --quick: a training level whose plane (80x80) the JIT marks divisible by 16, a LOL level whose
# plane (100x150 = 15000) it does not, which is vectorised only through the kernels' ROW_ALIGN, and
# LOL's /8 level, whose plane (50x75 = 3750) is no multiple of 16 bytes: tiled flat along each sample.
QUICK_SHAPES = [((16, 6, 80, 80), True), ((1, 48, 100, 150), False), ((1, 96, 50, 75), False)]


def call_shapes(groups: list[str] | None) -> dict[str, list[tuple[tuple[int, ...], bool]]]:
    """Representative call shapes per group: ``(x's shape, whether it is a coupling's half)``."""
    shapes: dict[str, list[tuple[tuple[int, ...], bool]]] = defaultdict(list)
    for case in full_cases():
        entry = (case.shape, case.layer == "coupling")
        if entry not in shapes[case.group]:
            shapes[case.group].append(entry)
    for group, vectors in VECTOR_SHAPES.items():
        shapes[group] = [(shape, True) for shape in vectors]
    shapes["quick"] = QUICK_SHAPES
    return {g: v for g, v in shapes.items() if (g != "quick" if groups is None else g in groups)}


@dataclass(frozen=True)
class Launch:
    """One recorded kernel launch, specialised as Triton's JIT would for one target."""

    kernel: str
    target: str
    dtype: str
    layout: str
    direction: str
    needs: str | None
    shape: tuple[int, ...]
    block: tuple[int, int, int]
    num_warps: int
    signature: dict[str, str]
    constexprs: dict[tuple[int, ...], object]
    attrs: dict[tuple[int, ...], list]
    options: dict[str, object]
    flat: bool = False

    def key(self) -> tuple:
        """What decides the compiled code, and the layout: launches with equal keys share one row.

        The layout is part of it so that each layout's rows are complete: a channel slice that
        specialises like a contiguous tensor shares its binary (Triton's cache compiles it once)
        but is listed under its own layout.
        """
        return (self.kernel, self.target, self.layout, tuple(self.signature.items()),
                tuple(sorted(self.constexprs.items())), tuple(sorted((k, str(v)) for k, v in self.attrs.items())),
                self.num_warps)

    def specialisation(self) -> str:
        """The integer arguments the JIT made constant 1 or marked divisible by 16."""
        names = list(self.signature)
        # Strides (s...) and sizes (n_...) only: the constexpr flags and tile sizes are in the variant.
        ones = [names[k[0]] for k, v in self.constexprs.items() if v == 1 and names[k[0]][0] in "sn"]
        ints = [names[k[0]] for k, v in self.attrs.items() if v and self.signature[names[k[0]]] == "i32"]
        return f"=1: {','.join(ones) or '-'}; %16: {','.join(ints) or '-'}"


class _Recorder:
    """Stands in for a ``@triton.jit`` kernel: ``kernel[grid](*args, **kwargs)`` records the call."""

    def __init__(self, kernel, calls: list):
        self.kernel, self.calls = kernel, calls

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append((self.kernel, args, kwargs))


@contextlib.contextmanager
def recorded_launches(multiprocessors: int) -> Iterator[list]:
    """Run the launchers on CPU tensors as on a GPU with ``multiprocessors`` SMs, recording launches."""
    calls: list = []
    patched = {
        "_affine_forward_kernel": _Recorder(triton_affine._affine_forward_kernel, calls),
        "_affine_backward_kernel": _Recorder(triton_affine._affine_backward_kernel, calls),
        "_check": lambda *tensors: None,                    # CPU tensors stand in for CUDA ones
        "_multiprocessors_of": lambda x: multiprocessors,
    }
    saved = {name: getattr(triton_affine, name) for name in patched}
    for name, value in patched.items():
        setattr(triton_affine, name, value)
    try:
        yield calls
    finally:
        for name, value in saved.items():
            setattr(triton_affine, name, value)


def _tensors(shape: tuple[int, ...], layout: str, dtype: torch.dtype):
    """``x``, ``h``, the forward's ``out`` (or ``None``) and the output gradient, laid out as ``layout``.

    ``torch.empty``: the launches are only recorded, nothing reads the values, and untouched pages
    of a 4K level's tensors cost no memory.
    """
    b, c, *space = shape
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format

    def empty(channels: int) -> torch.Tensor:
        return torch.empty(b, channels, *space, dtype=dtype, memory_format=fmt)

    h = empty(2 * c)
    if layout != "channel_split":
        return empty(c), h, None, empty(c)
    # The coupling's x2 = z[:, c:]; fused_affine_coupling writes y2 into the joined output's second
    # half and hands the backward that half of the joined output's gradient.
    x, out, grad = (empty(2 * c)[:, c:] for _ in range(3))
    return x, h, out, grad


def record(target: str, groups: list[str] | None, dtypes: list[str], layouts: list[str],
           needs_list: list[tuple[bool, bool]]) -> list[Launch]:
    """Every launch the launchers make for the representative shapes, specialised for ``target``."""
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import CUDABackend
    from triton.runtime.jit import create_function_from_signature

    capability, sms = TARGETS[target]
    backend = CUDABackend(GPUTarget("cuda", capability, 32))
    binders: dict = {}
    launches = []
    for dtype_name in dtypes:
        for shapes in call_shapes(groups).values():
            for shape, coupling in shapes:
                for layout in layouts:
                    if (layout == "channels_last" and len(shape) != 4) or (layout == "channel_split" and not coupling):
                        continue
                    x, h, out, grad = _tensors(shape, layout, DTYPES[dtype_name])
                    grad_logdet = torch.empty(shape[0])
                    for inverse, direction in DIRECTIONS.items():
                        options = dict(eps=1e-4, layout="cross", inverse=inverse)
                        with recorded_launches(sms) as calls:
                            triton_affine.affine_forward(x, h, out=out, **options)
                            for needs in needs_list:
                                triton_affine.affine_backward(x, h, grad, grad_logdet, needs=needs, **options)
                        for (kernel, args, kwargs), needs in zip(calls, (None, *needs_list)):
                            if kernel not in binders:
                                binders[kernel] = create_function_from_signature(kernel.signature, kernel.params, backend)
                            # The JIT's own argument binding and specialisation, then its packing into
                            # what triton.compile takes (JITFunction.run does exactly this).
                            bound, specialization, jit_options = binders[kernel](*args, **kwargs)
                            opts, signature, constexprs, attrs = kernel._pack_args(
                                backend, kwargs, bound, specialization, jit_options)
                            launches.append(Launch(
                                kernel.fn.__name__, target, dtype_name, layout, direction,
                                None if needs is None else NEEDS[needs], shape,
                                (kwargs["BLOCK_B"], kwargs["BLOCK_C"], kwargs["BLOCK_N"]), kwargs["num_warps"],
                                signature, constexprs, attrs, opts.__dict__, kwargs["FLAT"],
                            ))
    return launches


_ACCESS = re.compile(r"\b(ld|st)\.global((?:\.[\w:]+)+)")


def access_widths(ptx: str) -> tuple[dict[int, int], dict[int, int]]:
    """Global loads and stores in ``ptx``, counted by width in bits (``ld.global.v4.b32``: 128).

    Example:
        >>> access_widths("ld.global.v4.b32 {%r1, %r2, %r3, %r4}, [%rd1];\\n@%p1 st.global.b16 [%rd2], %rs1;")
        ({128: 1}, {16: 1})
    """
    counts: dict[str, Counter] = {"ld": Counter(), "st": Counter()}
    for op, suffix in _ACCESS.findall(ptx):
        parts = suffix.strip(".").split(".")
        lanes = next((int(p[1:]) for p in parts if re.fullmatch(r"v\d+", p)), 1)
        bits = next(int(p[1:]) for p in parts if re.fullmatch(r"[bfsu]\d+", p))
        counts[op][lanes * bits] += 1
    return dict(sorted(counts["ld"].items())), dict(sorted(counts["st"].items()))


def resource_usage(cubin: bytes) -> dict[str, int]:
    """Registers, local memory and static shared memory of a cubin, as the bundled cuobjdump reports."""
    from triton import knobs

    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        done = subprocess.run([knobs.nvidia.cuobjdump.path, "--dump-resource-usage", file.name],
                              capture_output=True, text=True, check=True)
    usage = dict(re.findall(r"\b(REG|LOCAL|STACK|SHARED):(\d+)", done.stdout.split("Function", 1)[1]))
    return {k: int(v) for k, v in usage.items()}


def compile_launch(launch: Launch) -> dict[str, object]:
    """Compile one launch for its target; the row: resources, access widths, or the error."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = getattr(triton_affine, launch.kernel)
    row: dict[str, object] = {"compiled": False, "registers": None, "spills": None, "shared": None,
                              "loads": None, "stores": None, "error": None}
    try:
        compiled = triton.compile(
            ASTSource(fn=kernel, signature=launch.signature, constexprs=launch.constexprs, attrs=launch.attrs),
            target=GPUTarget("cuda", TARGETS[launch.target][0], 32), options=launch.options,
        )
    except Exception as error:  # any compiler failure is a finding to report, not a reason to stop
        row["error"] = f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}"
        return row
    usage = resource_usage(compiled.asm["cubin"])
    loads, stores = access_widths(compiled.asm["ptx"])
    # shared: the bytes the launch requests (the cross-warp reduction of the log-det); cuobjdump's
    # static SHARED adds the 1 KiB that sm_80+ reserves for every block.
    row.update(compiled=True, registers=usage["REG"], spills=usage["LOCAL"], shared=compiled.metadata.shared,
               loads=loads, stores=stores)
    return row


def describe(launch: Launch) -> str:
    needs = f" {launch.needs}" if launch.needs else ""
    block = "x".join(map(str, launch.block))
    flat = " flat" if launch.flat else ""   # a sample's channels as one row (see triton_affine._plan)
    return f"{launch.direction}{needs}, {launch.layout}, block {block}{flat}, {launch.num_warps} warps"


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    if triton_affine.is_interpreted():
        sys.exit("kernel_report: TRITON_INTERPRET=1 is set; the kernels must be compiled, not interpreted")
    distinct: dict[tuple, tuple[Launch, int]] = {}
    for target in args.targets:
        needs = [(True, True)] if args.quick else list(NEEDS)
        for launch in record(target, ["quick"] if args.quick else args.shapes, args.dtypes, args.layouts, needs):
            first, count = distinct.get(launch.key(), (launch, 0))
            distinct[launch.key()] = (first, count + 1)
    launches = [first for first, _ in distinct.values()]
    print(f"{len(launches)} distinct variants to compile", file=sys.stderr)
    with ProcessPoolExecutor(args.jobs) if args.jobs > 1 else contextlib.nullcontext() as pool:
        results = (pool or _Serial()).map(compile_launch, launches)
        rows = []
        for (launch, calls), result in zip(distinct.values(), results):
            row = {
                "kernel": KERNELS[launch.kernel], "target": launch.target, "dtype": launch.dtype,
                "variant": describe(launch), "direction": launch.direction, "needs": launch.needs,
                "layout": launch.layout, "block": list(launch.block), "num_warps": launch.num_warps,
                "specialisation": launch.specialisation(), "shape": "x".join(map(str, launch.shape)),
                "calls": calls, **result,
            }
            rows.append(row)
            print(f"{row['kernel']:8} {row['target']} {row['dtype']:8} {row['variant']}: "
                  + (f"{row['registers']} regs, {row['spills']} B local, loads {row['loads']}, stores {row['stores']}"
                     if row["compiled"] else row["error"]), file=sys.stderr)
    return rows


class _Serial:
    map = staticmethod(map)


def _kernel_variant(row: dict[str, object]) -> str:
    return f"{row['kernel']} {row['direction']}" + (f" {row['needs']}" if row["needs"] else "")


def _widest(widths: dict) -> int:
    # int(): the keys are strings once the rows have been through JSON.
    return max(map(int, widths))


def narrowest_tile_access(row: dict[str, object]) -> int:
    """The narrowest global access of a variant's tiles, in bits: every load and store but the one
    32-bit access per sample (the forward's log-det partial store, the backward's log-det gradient load).

    Example:
        >>> narrowest_tile_access({"kernel": "forward", "loads": {"64": 8, "128": 2}, "stores": {"32": 1, "128": 2}})
        64
    """
    loads, stores = (Counter({int(k): v for k, v in row[key].items()}) for key in ("loads", "stores"))
    per_sample = stores if row["kernel"] == "forward" else loads
    if per_sample[32]:
        per_sample[32] -= 1
    return min(loads + stores)


def summary(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """One line per (kernel, target, dtype, layout): counts, resource ranges, access widths seen."""
    groups: dict[tuple, list] = defaultdict(list)
    for row in rows:
        groups[(row["kernel"], row["target"], row["dtype"], row["layout"])].append(row)
    lines = []
    for (kernel, target, dtype, layout), members in groups.items():
        ok = [r for r in members if r["compiled"]]
        regs = sorted(r["registers"] for r in ok)
        # The widest load of each variant: the width of its bulk tile accesses (the per-sample
        # log-det partials are 32-bit scalars in every variant).
        widest_load = sorted({_widest(r["loads"]) for r in ok if r["loads"]})
        widest_store = sorted({_widest(r["stores"]) for r in ok if r["stores"]})
        lines.append({
            "kernel": kernel, "target": target, "dtype": dtype, "layout": layout,
            "variants": len(members), "compiled": len(ok),
            "registers": f"{regs[0]}-{regs[-1]}" if regs else None,
            "spills": max((r["spills"] for r in ok), default=None),
            "shared": max((r["shared"] for r in ok), default=None),
            "load_bits": "/".join(map(str, widest_load)) or None,
            "store_bits": "/".join(map(str, widest_store)) or None,
        })
    return lines


def markdown(rows: list[dict[str, object]], env: dict[str, object], command: str) -> str:
    failures = [r for r in rows if not r["compiled"] or r["spills"]]
    contiguous = [r for r in rows if r["layout"] == "contiguous" and r["compiled"]]
    # Narrow: a tile access under 64 bits, even where others are wider (the cross layout's h
    # halves can be narrower than x at a plane that is no multiple of 16 bytes).
    narrow = [r for r in contiguous if narrowest_tile_access(r) < 64]
    # The narrow variants by call: directions, gradients and targets share the reason.
    narrow_calls: dict[tuple, dict[str, object]] = {}
    for r in narrow:
        line = narrow_calls.setdefault((r["dtype"], r["shape"], tuple(r["block"])), {
            "dtype": r["dtype"], "shape": r["shape"], "block": "x".join(map(str, r["block"])), "variants": 0,
            "kernels": set(), "narrowest": set(), "load_bits": set(), "store_bits": set()})
        line["variants"] += 1
        line["kernels"].add(_kernel_variant(r))
        line["narrowest"].add(narrowest_tile_access(r))
        line["load_bits"].add(_widest(r["loads"]))
        line["store_bits"].add(_widest(r["stores"]))
    every_kernel = {_kernel_variant(r) for r in rows}
    for line in narrow_calls.values():
        line["kernels"] = "all" if line["kernels"] == every_kernel else ", ".join(sorted(line["kernels"]))
        line["narrowest"] = "/".join(map(str, sorted(line["narrowest"])))
        line["load_bits"] = "/".join(map(str, sorted(line["load_bits"])))
        line["store_bits"] = "/".join(map(str, sorted(line["store_bits"])))
    text = [
        "# Triton kernels compiled ahead of time for NVIDIA GPUs",
        "",
        f"Compiled on a CPU (no GPU ran anything): triton {env['triton']}, torch {env['torch']}, "
        f"{env['date_utc']} UTC, commit {env['commit']}; `{command}`. {len(rows)} distinct variants "
        "(kernel, target, dtype, direction, gradients written, layout, tile shape and warps, and the "
        "JIT's specialisation of the recorded launch), compiled to cubins with the ptxas bundled with "
        "Triton; registers and local memory (spills) per thread from its cuobjdump; shared: the bytes a "
        "launch requests; load/store bits: the widest global access in each variant's PTX (a single "
        "value when every variant of the line has the same), 128 is a 16-byte vector access. "
        f"Failed to compile or spilled: {len(failures)}. Contiguous variants with a tile access (any "
        "load or store but the one 32-bit log-det access per sample) narrower than 64 bits: "
        f"{len(narrow)}.",
        "",
        markdown_table(summary(rows), [
            ("kernel", "kernel", ""), ("target", "target", ""), ("dtype", "dtype", ""), ("layout", "layout", ""),
            ("variants", "variants", "d"), ("compiled", "compiled", "d"), ("registers", "registers", ""),
            ("spills", "spills (B)", "d"), ("shared", "shared (B)", "d"), ("load_bits", "load bits", ""),
            ("store_bits", "store bits", ""),
        ]),
    ]
    if narrow:
        text += ["", "Contiguous variants with a tile access narrower than 64 bits, by call (both targets; "
                 "narrowest: that access, load/store bits: the widest as above):", "",
                 markdown_table(list(narrow_calls.values()), [
                     ("dtype", "dtype", ""), ("shape", "example shape", ""), ("block", "tile", ""),
                     ("variants", "variants", "d"), ("kernels", "kernels", ""), ("narrowest", "narrowest bits", ""),
                     ("load_bits", "load bits", ""), ("store_bits", "store bits", "")])]
    return "\n".join(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    parser.add_argument("--shapes", nargs="+", choices=[*dict.fromkeys(c.group for c in full_cases()), *VECTOR_SHAPES],
                        help="shape groups (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="three shapes, contiguous, backward writing dx and dh only (what CI compiles)")
    parser.add_argument("--jobs", type=int, default=1, help="compiler processes (default 1)")
    parser.add_argument("--json", type=Path, help="write the rows as a JSON list to this file")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results for a full run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.layouts = ["contiguous"]
    rows = run(args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    full = not args.quick and args.shapes is None and all(len(getattr(args, k)) == len(v) for k, v in
                                       (("targets", TARGETS), ("dtypes", DTYPES), ("layouts", LAYOUTS)))
    out = args.out or (RESULTS if full else None)
    env = environment(torch.device("cpu"))
    command = "python benchmarks/kernel_report.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    text = markdown(rows, env, command)
    print(text)
    if out is not None:
        # The summary only: the rows of a full run weigh 1.5 MB of JSON; --json writes them.
        payload = {"benchmark": "kernel_report", "environment": env, "settings": {"command": command},
                   "variants": len(rows), "summary": summary(rows)}
        write_results("kernel_report", payload, text, out)
    if any(not r["compiled"] or r["spills"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
