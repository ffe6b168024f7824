"""Benchmark the fused affine op of the coupling and injector layers.

Side by side, interleaved in one process: eager PyTorch (the reference, ~7 kernels each way),
``torch.compile`` of the same reference (Inductor fuses it), and flowkit's Triton kernels (on CUDA),
forward and forward+backward, at the shapes LLFlow runs:

* training, batch 16 of 160x160 patches: the three levels (/2, /4, /8 after squeezes, 12, 48 and 192
  channels); the coupling acts on half the channels, the injector on all of them;
* inference (the inverse direction, no gradient): LOL 1x3x400x600, 1080p and 4K, each at the three
  levels.

A coupling case times the whole coupling step of :class:`~flowkit.layers.AffineCoupling` around its
sub-network: split the level's tensor ``z`` into ``x1, x2``, map ``x2`` (a strided channel slice, as
the layer passes it) and join ``cat([x1, y2])``; with gradients, back into ``z``. On CUDA it is
timed both as the layer runs it, :func:`~flowkit.kernels.fused_affine_coupling` (the kernel writes
``y2`` into the joined output), and as the Triton map followed by ``torch.cat``. The injector's
``x`` is the whole tensor and it has no join. On CUDA one more variant replays the kernels alone
(forward, and backward for training) from a CUDA graph: their device time without any host work,
the bound the eager route approaches as host overhead vanishes.

For each it reports the median time and interquartile range, images/s, the effective bandwidth
(the bytes a perfectly fused op must move, divided by the time) and that bandwidth as a fraction of
a device-to-device copy measured in the same run. On the CPU only ratios mean anything, and the
flowkit default (``backend="auto"``, the reference on CPU) is shown to cost the same as eager.

Usage::

    python benchmarks/coupling.py            # the full set (meant for a GPU)
    python benchmarks/coupling.py --quick    # a few small shapes; under 2 minutes on a CPU

Results go to ``<out>/coupling_<device>[_<dtype>][_quick].json`` and ``.md`` (``--out``, default
``benchmarks/results``; the dtype only when it is not float32).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from _timing import copy_bandwidth, device_tag, environment, interleaved, markdown_table, write_results

from flowkit.kernels import fused_affine, fused_affine_coupling
from flowkit.kernels.reference import affine_reference

# LLFlow: three levels, each a squeeze (x2 down, x4 channels) of the 3-channel image.
LEVELS = ((2, 12), (4, 48), (8, 192))


@dataclass(frozen=True)
class Case:
    """One timed configuration."""

    group: str            # "train", "LOL", "1080p", "4K"
    level: int            # downsampling factor of the level
    layer: str            # "coupling" (half the channels) or "injector" (all of them)
    batch: int
    channels: int         # channels of x (h has twice as many)
    height: int
    width: int
    backward: bool        # time forward+backward (training) or the inverse alone (inference)

    @property
    def mode(self) -> str:
        return "fwd+bwd" if self.backward else ("fwd" if self.group == "train" else "inverse")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.channels, self.height, self.width)


def level_cases(group: str, batch: int, height: int, width: int, modes: tuple[bool, ...]) -> list[Case]:
    cases = []
    for factor, channels in LEVELS:
        for layer, c in (("coupling", channels // 2), ("injector", channels)):
            for backward in modes:
                size = (height // factor, width // factor)
                cases.append(Case(group, factor, layer, batch, c, *size, backward))
    return cases


def full_cases() -> list[Case]:
    return (
        level_cases("train", 16, 160, 160, (False, True))
        + level_cases("LOL", 1, 400, 600, (False,))
        + level_cases("1080p", 1, 1080, 1920, (False,))
        + level_cases("4K", 1, 2160, 3840, (False,))
    )


def quick_cases() -> list[Case]:
    # Smallest level of training (batch cut to 4) and of LOL inference: enough for CPU ratios.
    return [
        Case("train", 8, "coupling", 4, 96, 20, 20, False),
        Case("train", 8, "coupling", 4, 96, 20, 20, True),
        Case("train", 8, "injector", 4, 192, 20, 20, True),
        Case("LOL", 8, "coupling", 1, 96, 50, 75, False),
    ]


def bytes_moved(case: Case, dtype: torch.dtype) -> int:
    """The traffic of a perfectly fused step: read x and h, write y (a coupling also reads x1 and
    writes it into the joined output); backward, read x, h and dy, write dx and dh (a coupling's
    gradient for x1 is a view of the output gradient: no traffic)."""
    elements = case.batch * case.channels * case.height * case.width
    size = torch.finfo(dtype).bits // 8
    forward = elements * size * (6 if case.layer == "coupling" else 4)   # x, y, h's 2C (+ x1 twice)
    backward = elements * size * 7         # x, dy, dx, and h, dh at 2C channels each
    return forward + (backward if case.backward else 0)


def make_variants(case: Case, device: torch.device, dtype: torch.dtype) -> dict[str, Callable[[], object]]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    b, c, hh, ww = case.shape
    coupling = case.layer == "coupling"
    # A coupling acts on the second half of the level's tensor z (a strided view) and joins the
    # first half back; an injector acts on the whole tensor.
    z = torch.randn(b, 2 * c if coupling else c, hh, ww, generator=gen).to(device, dtype)
    h = torch.randn(b, 2 * c, hh, ww, generator=gen).to(device, dtype)
    inverse = not case.backward and case.group != "train"
    options = dict(layout="cross", inverse=inverse)

    def halves(z):
        return z.split([c, c], dim=1) if coupling else (None, z)

    def joined(affine):
        def step(z, h):
            x1, x2 = halves(z)
            y2, logdet = affine(x2, h, **options)
            return (y2 if x1 is None else torch.cat([x1, y2], dim=1)), logdet
        return step

    reference = joined(affine_reference)
    impls: dict[str, Callable] = {
        "eager": reference,
        "compile": torch.compile(reference, fullgraph=True, dynamic=False),
    }
    if device.type == "cuda":
        if coupling:
            impls["triton"] = lambda z, h: fused_affine_coupling(*halves(z), h, backend="triton", **options)
            impls["triton map + cat"] = joined(functools.partial(fused_affine, backend="triton"))
        else:
            impls["triton"] = joined(functools.partial(fused_affine, backend="triton"))
    else:
        # What the layers call by default: on the CPU it must cost what eager does.
        impls["flowkit default"] = (
            (lambda z, h: fused_affine_coupling(*halves(z), h, **options)) if coupling else joined(fused_affine)
        )

    graphed = _graphed_kernels(case, z, h, inverse, gen) if device.type == "cuda" else {}

    if not case.backward:
        def forward_only(fn):
            def run():
                with torch.no_grad():
                    return fn(z, h)
            return run
        return {**{name: forward_only(fn) for name, fn in impls.items()}, **graphed}

    zg, hg = z.clone().requires_grad_(), h.clone().requires_grad_()
    gy = torch.randn(z.shape, generator=gen).to(device, dtype)
    gl = torch.randn(b, generator=gen).to(device)

    def with_backward(fn):
        def run():
            y, logdet = fn(zg, hg)
            return torch.autograd.grad((y, logdet), (zg, hg), (gy, gl))
        return run
    return {**{name: with_backward(fn) for name, fn in impls.items()}, **graphed}


def _graphed_kernels(case: Case, z: torch.Tensor, h: torch.Tensor, inverse: bool,
                     gen: torch.Generator) -> dict[str, Callable[[], object]]:
    """The kernels alone (no autograd, no host work) replayed from a CUDA graph: their device time.

    For a coupling: the copy of ``x1`` into the joined output and the forward kernel writing into
    its other half, then the backward kernel on the output gradient's second half."""
    from flowkit.kernels import triton_affine

    options = dict(eps=1e-4, layout="cross", inverse=inverse)
    c = case.channels
    coupling = case.layer == "coupling"
    x1, x = z.split([c, c], dim=1) if coupling else (None, z)
    joined = torch.empty_like(z)
    gz = torch.randn(z.shape, generator=gen).to(z.device, z.dtype)
    gy = gz[:, c:] if coupling else gz
    gl = torch.randn(z.shape[0], generator=gen).to(z.device)

    def kernels():
        if coupling:
            joined[:, :c].copy_(x1)
            out = triton_affine.affine_forward(x, h, **options, out=joined[:, c:])
        else:
            out = triton_affine.affine_forward(x, h, **options)
        return (out, triton_affine.affine_backward(x, h, gy, gl, **options)) if case.backward else out

    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (Triton compiles) outside the capture
            kernels()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            kernels()
    except RuntimeError as error:  # report and carry on: the other variants still mean something
        print(f"  {case.group} {case.layer} {case.mode}: CUDA-graph capture failed: {error}", file=sys.stderr)
        return {}
    return {"triton kernel (CUDA graph)": graph.replay}


def run(args: argparse.Namespace) -> dict[str, object]:
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    cases = quick_cases() if args.quick else full_cases()
    copy_bytes = (64 << 20) if device.type == "cpu" else (1 << 30)
    copy_before = copy_bandwidth(device, copy_bytes)
    rows = []
    for case in cases:
        torch._dynamo.reset()  # each case compiles afresh instead of piling up recompilations
        variants = make_variants(case, device, dtype)
        stats = interleaved(variants, device, rounds=args.rounds, min_sample_s=args.min_sample_ms / 1e3)
        eager = stats["eager"]
        for name, s in stats.items():
            gbps = bytes_moved(case, dtype) / s.median / 1e9
            rows.append({
                "group": case.group, "level": f"/{case.level}", "layer": case.layer, "mode": case.mode,
                "shape": "x".join(map(str, case.shape)), "variant": name,
                "median_ms": s.median * 1e3, "iqr_ms": s.iqr * 1e3, "best_ms": min(s.values) * 1e3,
                "samples": s.samples,
                "speedup_vs_eager": s.speedup_over(eager), "images_per_s": case.batch / s.median,
                "gb_per_s": gbps,
            })
        print(f"  {case.group} /{case.level} {case.layer} {case.mode}: "
              + ", ".join(f"{n} {s.speedup_over(eager):.2f}x" for n, s in stats.items()), file=sys.stderr)
    copy_after = copy_bandwidth(device, copy_bytes)
    copy_gbps = (copy_before + copy_after) / 2 / 1e9
    for row in rows:
        row["copy_fraction"] = row["gb_per_s"] / copy_gbps
    return {
        "benchmark": "coupling",
        "environment": environment(device),
        "settings": {"quick": args.quick, "dtype": args.dtype, "rounds": args.rounds,
                     "min_sample_ms": args.min_sample_ms, "layout": "cross"},
        "copy_gb_per_s": {"before": copy_before / 1e9, "after": copy_after / 1e9},
        "rows": rows,
    }


COLUMNS = [
    ("group", "case", ""), ("level", "level", ""), ("layer", "layer", ""), ("mode", "mode", ""),
    ("shape", "x shape", ""), ("variant", "variant", ""), ("median_ms", "median ms", ".3f"),
    ("iqr_ms", "IQR ms", ".3f"), ("best_ms", "best ms", ".3f"), ("speedup_vs_eager", "vs eager", ".2f"),
    ("images_per_s", "images/s", ".1f"), ("gb_per_s", "GB/s", ".1f"),
    ("copy_fraction", "of copy BW", ".0%"),
]


def report(result: dict[str, object]) -> str:
    env, settings, copy = result["environment"], result["settings"], result["copy_gb_per_s"]
    header = [
        f"# fused affine (coupling/injector) benchmark on {env['device']}",
        "",
        f"torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}, {env['threads']} threads, "
        f"{env['date_utc']} UTC, commit {env['commit']}; {settings['dtype']}, layout {settings['layout']}, "
        f"{result['rows'][0]['samples']} interleaved samples per variant"
        + (" (--quick: a small subset of shapes)" if settings["quick"] else "") + ". "
        "'vs eager' is the median over rounds of the eager/variant time ratio within a round.",
        f"Device-to-device copy: {copy['before']:.1f} GB/s before, {copy['after']:.1f} GB/s after the cases "
        "(read + write bytes).",
        "",
    ]
    if env["device_type"] == "cpu":
        header += [
            "CPU run: absolute times depend on a shared, noisy machine; read the ratios only. On the CPU "
            "'flowkit default' is the eager reference plus about 1 us of argument checks per call, so its "
            "ratio to 'eager' also shows this run's noise floor.",
            "",
        ]
    return "\n".join(header) + markdown_table(result["rows"], COLUMNS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few small shapes (CPU-friendly, < 2 minutes)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--rounds", type=int, default=None, help="samples per variant (default 30, quick 41)")
    parser.add_argument("--min-sample-ms", type=float, default=None,
                        help="shortest sample, back-to-back calls (default 20 ms, quick 15 ms)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results", help="results folder")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (41 if args.quick else 30)
    args.min_sample_ms = args.min_sample_ms or (15.0 if args.quick else 20.0)
    torch.set_num_threads(args.threads)
    result = run(args)
    markdown = report(result)
    stem = (f"coupling_{device_tag(torch.device(args.device))}"
            + (f"_{args.dtype}" if args.dtype != "float32" else "") + ("_quick" if args.quick else ""))
    paths = write_results(stem, result, markdown, args.out)
    print(markdown)
    print("\nwrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
