"""Benchmark LLFlow end to end: enhancement of one LOL image and one training step.

Variants, interleaved in one process (each with its own copy of the model and optimizer):

* ``eager``: plain PyTorch, float32, the reference backend for the affine ops;
* ``compile``: ``torch.compile`` of the same computation (Inductor fuses the affine ops itself);
* ``kernels``: eager, with flowkit's Triton kernels for the coupling and injector (CUDA only);
* ``bf16``: eager under ``torch.autocast(bfloat16)``;
* ``kernels+bf16``: both (CUDA only).

The two workloads are ``model.enhance(low)`` at 1x3x400x600 (a LOL image) and one training step
(``model.loss(low, high)``, backward, AdamW step) at 16x3x160x160. Both take the histogram-equalized
input precomputed, as LLFlow's data pipeline does, so the network alone is timed. The speedup of a
variant is the median over rounds of the eager/variant time ratio within a round.

Usage::

    python benchmarks/llflow.py            # LOL_smallNet sizes at the real resolutions (for a GPU)
    python benchmarks/llflow.py --quick    # a tiny model on tiny images; under 2 minutes on a CPU
    python benchmarks/llflow.py --quick --compile   # also torch.compile on the CPU (minutes: see below)

On a CPU, ``--quick`` leaves out the ``compile`` variant unless ``--compile`` is given: a cold
Inductor compile of even the tiny model takes minutes there (measured on a shared 2-core machine:
about 90 s for ``enhance``, which recompiles once because of ``InvConv1x1``'s inverse cache, and
86 s for the training step), more than the whole quick budget.

Results go to ``benchmarks/results/llflow_<device>[_quick].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import sys
from collections.abc import Callable

import torch
from _timing import device_tag, environment, interleaved, markdown_table, write_results

from flowkit.kernels import use_backend
from flowkit.models import LLFlow, LLFlowConfig
from flowkit.models.llflow.histeq import histeq_image

# --quick: a model small enough that Inductor compiles it on a CPU in seconds, not minutes.
QUICK_CONFIG = LLFlowConfig(encoder_channels=8, encoder_blocks=2, growth_channels=8, stack_blocks=(1,),
                            steps_per_level=1, transition_steps=1, hidden_channels=16)


def variant_names(device: torch.device, compile_: bool) -> list[str]:
    names = ["eager"] + (["compile"] if compile_ else [])
    if device.type == "cuda":
        names += ["kernels"]
    names += ["bf16"]
    if device.type == "cuda":
        names += ["kernels+bf16"]
    return names


def context(name: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The backend and autocast a variant runs under."""
    stack = contextlib.ExitStack()
    stack.enter_context(use_backend("triton" if "kernels" in name else "torch"))
    if "bf16" in name:
        stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
    return stack


def make_images(batch: int, height: int, width: int, device: torch.device, seed: int):
    gen = torch.Generator().manual_seed(seed)
    high = torch.rand(batch, 3, height, width, generator=gen)
    low = high * (0.05 + 0.15 * torch.rand(batch, 1, 1, 1, generator=gen))  # dark versions
    return low.to(device), high.to(device), histeq_image(low).to(device)


def enhance_variants(model: LLFlow, names: list[str], images, device: torch.device) -> dict[str, Callable]:
    low, _, histeq = images
    variants = {}
    for name in names:
        net = copy.deepcopy(model).eval()
        fn = functools.partial(net.enhance, low, histeq=histeq)
        if name == "compile":
            fn = torch.compile(fn)

        def run(fn=fn, name=name):
            with context(name, device):
                return fn()
        variants[name] = run
    return variants


def train_variants(model: LLFlow, names: list[str], images, device: torch.device) -> dict[str, Callable]:
    low, high, histeq = images
    variants = {}
    for name in names:
        net = copy.deepcopy(model).train()
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-5)
        loss_fn = functools.partial(net.loss, low, high, histeq=histeq)
        if name == "compile":
            loss_fn = torch.compile(loss_fn)

        def step(loss_fn=loss_fn, optimizer=optimizer, name=name):
            optimizer.zero_grad(set_to_none=True)
            with context(name, device):
                loss = loss_fn()
            loss.backward()
            optimizer.step()
            return loss
        variants[name] = step
    return variants


def run(args: argparse.Namespace) -> dict[str, object]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = LLFlow(QUICK_CONFIG if args.quick else LLFlowConfig.lol_small()).to(device)
    if args.quick:
        enhance_size, train_size = (1, 48, 64), (2, 32, 32)
    else:
        enhance_size, train_size = (1, 400, 600), (16, 160, 160)
    train_images = make_images(*train_size, device, seed=1)
    enhance_images = make_images(*enhance_size, device, seed=2)
    # One eager step in training mode initialises every ActNorm from data, as training would.
    model.train()
    model.loss(*train_images[:2], histeq=train_images[2]).backward()
    model.zero_grad(set_to_none=True)
    names = variant_names(device, args.compile)
    rows = []
    workloads = [
        ("enhance", enhance_size, enhance_variants(model, names, enhance_images, device)),
        ("train step", train_size, train_variants(model, names, train_images, device)),
    ]
    for workload, size, variants in workloads:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        stats = interleaved(variants, device, rounds=args.rounds, min_sample_s=args.min_sample_ms / 1e3)
        eager = stats["eager"]
        for name, s in stats.items():
            rows.append({
                "workload": workload, "shape": f"{size[0]}x3x{size[1]}x{size[2]}", "variant": name,
                "median_ms": s.median * 1e3, "iqr_ms": s.iqr * 1e3, "best_ms": min(s.values) * 1e3,
                "samples": s.samples, "speedup_vs_eager": s.speedup_over(eager),
                "images_per_s": size[0] / s.median,
            })
        print(f"  {workload}: " + ", ".join(f"{n} {s.speedup_over(eager):.2f}x" for n, s in stats.items()),
              file=sys.stderr)
    return {
        "benchmark": "llflow",
        "environment": environment(device),
        "settings": {"quick": args.quick,
                     "config": repr(QUICK_CONFIG) if args.quick else "LLFlowConfig.lol_small()",
                     "rounds": args.rounds,
                     "min_sample_ms": args.min_sample_ms, "compile": args.compile},
        "rows": rows,
    }


COLUMNS = [
    ("workload", "workload", ""), ("shape", "input", ""), ("variant", "variant", ""),
    ("median_ms", "median ms", ".2f"), ("iqr_ms", "IQR ms", ".2f"), ("best_ms", "best ms", ".2f"),
    ("speedup_vs_eager", "vs eager", ".2f"), ("images_per_s", "images/s", ".2f"),
]


def report(result: dict[str, object]) -> str:
    env, settings = result["environment"], result["settings"]
    lines = [
        f"# LLFlow end-to-end benchmark on {env['device']}",
        "",
        f"torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}, {env['threads']} threads, "
        f"{env['date_utc']} UTC, commit {env['commit']}; {settings['config']}, "
        f"{result['rows'][0]['samples']} interleaved samples per variant"
        + (" (--quick: tiny images)" if settings["quick"] else "") + ". "
        "'vs eager' is the median over rounds of the eager/variant time ratio within a round.",
        "",
    ]
    if env["device_type"] == "cpu":
        lines += ["CPU run: absolute times depend on a shared, noisy machine; read the ratios only.", ""]
    if not settings["compile"]:
        lines += ["The torch.compile variant was left out (pass --compile to include it).", ""]
    return "\n".join(lines) + markdown_table(result["rows"], COLUMNS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny images (CPU-friendly, < 2 minutes)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=None, help="samples per variant (default 20, quick 15)")
    parser.add_argument("--min-sample-ms", type=float, default=None,
                        help="shortest sample, back-to-back calls (default 50 ms, quick 20 ms)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="include the torch.compile variant (default: yes, except --quick on a CPU)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (15 if args.quick else 20)
    if args.compile is None:
        args.compile = not (args.quick and args.device == "cpu")
    args.min_sample_ms = args.min_sample_ms or (20.0 if args.quick else 50.0)
    torch.set_num_threads(args.threads)
    # Dynamo compiles a method once per layer instance it is bound to (LLFlow has 18 InvConv1x1
    # layers); the default limit of 8 would quietly leave the rest eager.
    torch._dynamo.config.recompile_limit = 64
    result = run(args)
    markdown = report(result)
    stem = f"llflow_{device_tag(torch.device(args.device))}" + ("_quick" if args.quick else "")
    paths = write_results(stem, result, markdown)
    print(markdown)
    print("\nwrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
