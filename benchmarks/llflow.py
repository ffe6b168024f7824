"""Benchmark LLFlow end to end: enhancement of one LOL-sized image and one training step.

Variants, interleaved in one process (each with its own copy of the model and optimizer):

* ``reference``: the reference implementation's own enhancement at the same weights (enhance
  only, with ``--reference-dir`` pointing at a checkout of github ``wyf0912/LLFlow``; loaded at run
  time by ``benchmarks/_reference_llflow.py``, never copied into flowkit);
* ``eager``: flowkit's default, float32, the PyTorch reference backend for the affine ops
  (``enhance`` runs channels-last on CPU);
* ``compile``: ``torch.compile`` of the same computation (Inductor fuses the affine ops itself);
* ``compile+freezing``: ``torch.compile`` with Inductor's ``freezing`` (weights folded in as
  constants, convolutions pre-packed for oneDNN), enhance only;
* ``compile+graphs``: ``torch.compile(mode="reduce-overhead")``, CUDA graphs (CUDA only), for the
  launch-bound shapes;
* ``kernels``: eager, with flowkit's Triton kernels for the coupling and injector (CUDA only);
* ``compile+kernels``: ``torch.compile`` with the Triton kernels forced (CUDA only);
* ``bf16``: ``enhance(precision="bfloat16")``, or the training step under ``torch.autocast``;
* ``kernels+bf16``: both (CUDA only).

Workloads: ``enhance``, ``model.enhance(low)`` at 1x3xHxW (``--size``, default 400x600, a LOL
image), and ``train``, one training step (``model.loss(low, high)``, backward, AdamW step) at
16x3x160x160. Both take the histogram-equalized input precomputed, as LLFlow's data pipeline does,
so the network alone is timed. The speedup of a variant is the median over rounds of the
eager/variant time ratio within a round (and, for enhance, the reference/variant ratio). With
``--memory``, each enhance variant's peak memory above rest is measured once in a fresh process
(CUDA: ``max_memory_allocated``; CPU: the resident set's high-water mark ``VmHWM``, with glibc
told to serve every block of 64 KiB or more by ``mmap`` and return it when freed, so that the
resident peak is the peak of live memory as on CUDA. With glibc's defaults freed blocks stay in
its heap and the resident peak followed the allocator's history: bfloat16 enhancement of
lol_small measured 522-705 MiB in three runs, against 96 MiB of live memory).

Usage::

    python benchmarks/llflow.py                       # LOL_smallNet sizes (lol_small), for a GPU
    python benchmarks/llflow.py --preset lol --cases enhance --threads 1 2 \
        --reference-dir ~/src/LLFlow --memory         # the CPU comparison with the reference
    python benchmarks/llflow.py --quick               # a tiny model on tiny images; < 2 min on a CPU
    python benchmarks/llflow.py --quick --compile     # also torch.compile on the CPU (minutes)

On a CPU the ``compile`` variant is left out unless ``--compile`` is given: a cold Inductor compile
takes minutes there (measured on a shared 2-core machine: about 90 s for ``enhance`` of the tiny
``--quick`` model, which recompiles once because of ``InvConv1x1``'s inverse cache, and 86 s for
its training step).

Results go to ``<out>/llflow_<device>_<preset>[_<tag>].json`` and ``.md`` (``--out``, default
``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import functools
import gc
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from _timing import device_tag, environment, interleaved, markdown_table, write_results

from flowkit.kernels import use_backend
from flowkit.models import LLFlow, LLFlowConfig
from flowkit.models.llflow.histeq import histeq_image

# --quick: a model small enough that Inductor compiles it on a CPU in seconds, not minutes.
QUICK_CONFIG = LLFlowConfig(encoder_channels=8, encoder_blocks=2, growth_channels=8, stack_blocks=(1,),
                            steps_per_level=1, transition_steps=1, hidden_channels=16)
PRESETS = {"lol": LLFlowConfig.lol, "lol_small": LLFlowConfig.lol_small, "quick": lambda: QUICK_CONFIG}
TRAIN_SIZE, QUICK_TRAIN_SIZE, QUICK_ENHANCE_SIZE = (16, 160, 160), (2, 32, 32), (48, 64)


def variant_names(device: torch.device, compile_: bool, reference: bool, workload: str) -> list[str]:
    cuda = device.type == "cuda"
    names = (["reference"] if reference and workload == "enhance" else []) + ["eager"]
    if compile_:
        names += ["compile"] + (["compile+freezing"] if workload == "enhance" else [])
        names += ["compile+graphs", "compile+kernels"] if cuda else []
    names += (["kernels"] if cuda else []) + ["bf16"] + (["kernels+bf16"] if cuda else [])
    return names


def context(name: str, device: torch.device, workload: str) -> contextlib.AbstractContextManager:
    """The backend and autocast a variant runs under."""
    stack = contextlib.ExitStack()
    stack.enter_context(use_backend("triton" if "kernels" in name else "torch"))
    if "freezing" in name:  # Inductor folds the weights in as constants (inference only)
        stack.enter_context(torch._inductor.config.patch(freezing=True))
    if "bf16" in name and workload == "train":
        stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
    return stack


def make_images(batch: int, height: int, width: int, device: torch.device, seed: int):
    gen = torch.Generator().manual_seed(seed)
    high = torch.rand(batch, 3, height, width, generator=gen)
    low = high * (0.05 + 0.15 * torch.rand(batch, 1, 1, 1, generator=gen))  # dark versions
    return low.to(device), high.to(device), histeq_image(low).to(device)


def _compiled(fn: Callable, name: str) -> Callable:
    if name.startswith("compile"):
        return torch.compile(fn, mode="reduce-overhead" if "graphs" in name else None)
    return fn


def enhance_variant(model: LLFlow, name: str, images, device: torch.device, reference_dir: Path | None):
    low, _, histeq = images
    if name == "reference":
        from _reference_llflow import load_reference

        fn = functools.partial(load_reference(reference_dir, model), low, histeq)
    else:
        net = copy.deepcopy(model).eval()
        precision = "bfloat16" if "bf16" in name else "float32"
        fn = _compiled(functools.partial(net.enhance, low, histeq=histeq, precision=precision), name)

    def run(fn=fn, name=name):
        with context(name, device, "enhance"):
            return fn()
    return run


def train_variant(model: LLFlow, name: str, images, device: torch.device):
    low, high, histeq = images
    net = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-5)
    loss_fn = _compiled(functools.partial(net.loss, low, high, histeq=histeq), name)

    def step(loss_fn=loss_fn, optimizer=optimizer, name=name):
        optimizer.zero_grad(set_to_none=True)
        with context(name, device, "train"):
            loss = loss_fn()
        loss.backward()
        optimizer.step()
        return loss
    return step


def prepared_model(preset: str, device: torch.device) -> LLFlow:
    """The preset's model, ActNorms initialised from data by one training-mode pass, as training would."""
    torch.manual_seed(0)
    model = LLFlow(PRESETS[preset]()).to(device)
    train_images = make_images(*(QUICK_TRAIN_SIZE if preset == "quick" else (2, 32, 32)), device, seed=1)
    model.train()
    model.loss(*train_images[:2], histeq=train_images[2]).backward()
    model.zero_grad(set_to_none=True)
    return model


# -- peak memory of one enhancement, each variant in a fresh process ------------------------------


def measure_enhance_memory(args: argparse.Namespace, name: str, threads: int) -> float:
    """Peak memory above rest (MiB) of one ``enhance`` call of variant ``name``, in a fresh process."""
    spec = json.dumps({"preset": args.preset, "size": args.size, "device": args.device, "variant": name,
                       "threads": threads, "reference_dir": str(args.reference_dir or "")})
    # A fixed mmap threshold (which also turns off glibc's adaptive one): large blocks go back to
    # the system when freed instead of staying resident in the heap (see the module docstring).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
    done = subprocess.run([sys.executable, __file__, "--measure-memory", spec], capture_output=True,
                          text=True, timeout=1800, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement of {name} failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def _release_free_memory(device: torch.device) -> None:
    # Start each measured call from the same state: Python's garbage collected, and glibc's heap
    # trimmed of the freed blocks below the mmap threshold (larger ones were already returned).
    gc.collect()
    if device.type == "cpu":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def _memory_child(spec: dict) -> None:
    from memory import _memory_now, _peak, _reset_peak

    device = torch.device(spec["device"])
    torch.set_num_threads(spec["threads"])
    model = prepared_model(spec["preset"], device)
    images = make_images(1, *spec["size"], device, seed=2)
    fn = enhance_variant(model, spec["variant"], images, device, Path(spec["reference_dir"] or "."))
    del model
    fn()  # warm: first-call allocations, inverse caches, compilation
    peaks = []
    for _ in range(3):  # the allocator's state varies from call to call: report the median
        _release_free_memory(device)
        rest = _memory_now(device)
        _reset_peak(device)
        fn()
        peaks.append((_peak(device) - rest) / 2**20)
    print(sorted(peaks)[1])


# -- the run ------------------------------------------------------------------------------------


def run(args: argparse.Namespace, threads: int) -> list[dict]:
    device = torch.device(args.device)
    torch.set_num_threads(threads)
    model = prepared_model(args.preset, device)
    rows = []
    for workload in args.cases:
        size = (1, *args.size) if workload == "enhance" else (QUICK_TRAIN_SIZE if args.preset == "quick" else TRAIN_SIZE)
        images = make_images(*size, device, seed=2 if workload == "enhance" else 1)
        names = variant_names(device, args.compile, args.reference_dir is not None, workload)
        if workload == "enhance":
            variants = {n: enhance_variant(model, n, images, device, args.reference_dir) for n in names}
        else:
            variants = {n: train_variant(model, n, images, device) for n in names}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        stats = interleaved(variants, device, rounds=args.rounds, min_sample_s=args.min_sample_ms / 1e3)
        memory = {n: measure_enhance_memory(args, n, threads) for n in names} \
            if args.memory and workload == "enhance" else {}
        eager, reference = stats["eager"], stats.get("reference")
        for name, s in stats.items():
            rows.append({
                "workload": workload, "threads": threads, "shape": f"{size[0]}x3x{size[1]}x{size[2]}",
                "variant": name, "median_ms": s.median * 1e3, "iqr_ms": s.iqr * 1e3,
                "best_ms": min(s.values) * 1e3, "samples": s.samples,
                "speedup_vs_eager": s.speedup_over(eager),
                "speedup_vs_reference": s.speedup_over(reference) if reference else None,
                "peak_mb": memory.get(name),
                "memory_vs_reference": memory[name] / memory["reference"] if memory.get("reference") else None,
                "images_per_s": size[0] / s.median,
            })
        print(f"  {workload}, {threads} threads: "
              + ", ".join(f"{n} {s.speedup_over(eager):.2f}x" for n, s in stats.items()), file=sys.stderr)
    return rows


COLUMNS = [
    ("workload", "workload", ""), ("threads", "threads", ""), ("shape", "input", ""), ("variant", "variant", ""),
    ("median_ms", "median ms", ".1f"), ("iqr_ms", "IQR ms", ".1f"), ("best_ms", "best ms", ".1f"),
    ("speedup_vs_eager", "vs eager", ".2f"), ("speedup_vs_reference", "vs reference", ".2f"),
    ("peak_mb", "peak MiB above rest", ".1f"), ("memory_vs_reference", "memory vs reference", ".2f"),
]


def report(result: dict[str, object]) -> str:
    env, settings = result["environment"], result["settings"]
    lines = [
        f"# LLFlow end-to-end benchmark on {env['device']}",
        "",
        f"torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}, {env['date_utc']} UTC, commit "
        f"{env['commit']}; preset `{settings['preset']}` ({settings['config']}); "
        f"`{settings['command']}`; {result['rows'][0]['samples']} interleaved samples per variant. "
        "'vs eager' ('vs reference') is the median over rounds of the eager (reference)/variant time "
        "ratio within a round; memory is one enhancement's peak above rest, the median of 3 calls "
        "in a fresh process per variant (on a CPU: resident peak, blocks of 64 KiB or more mmapped "
        "and returned when freed).",
        "",
    ]
    if env["device_type"] == "cpu":
        lines += ["CPU run: absolute times depend on a shared, noisy machine; read the ratios only.", ""]
    if not settings["compile"]:
        lines += ["The torch.compile variants were left out (pass --compile to include them).", ""]
    return "\n".join(lines) + markdown_table(result["rows"], COLUMNS)


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 400x600, got {text!r}") from None
    if height < 8 or width < 8:
        raise argparse.ArgumentTypeError(f"expected a size of at least 8x8, got {text!r}")
    return height, width


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="model configuration (default lol_small; quick with --quick)")
    parser.add_argument("--quick", action="store_true", help="--preset quick at 48x64: CPU-friendly, < 2 minutes")
    parser.add_argument("--size", type=_size, default=None, help="enhancement size HxW (default 400x600)")
    parser.add_argument("--cases", nargs="+", choices=["enhance", "train"], default=["enhance", "train"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=None, help="samples per variant (default 20, quick 15)")
    parser.add_argument("--min-sample-ms", type=float, default=None,
                        help="shortest sample, back-to-back calls (default 50 ms, quick 20 ms)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="include the torch.compile variants (default: yes, except on a CPU)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="CPU thread counts to run")
    parser.add_argument("--reference-dir", type=Path, help="checkout of wyf0912/LLFlow: adds the reference")
    parser.add_argument("--memory", action="store_true", help="also measure each enhance variant's peak memory")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results", help="results folder")
    parser.add_argument("--tag", default="", help="suffix of the result files' names")
    parser.add_argument("--measure-memory", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_memory:
        _memory_child(json.loads(args.measure_memory))
        return
    args.preset = args.preset or ("quick" if args.quick else "lol_small")
    quick = args.preset == "quick"
    args.size = args.size or (QUICK_ENHANCE_SIZE if quick else (400, 600))
    args.rounds = args.rounds or (15 if quick else 20)
    if args.compile is None:
        args.compile = args.device != "cpu"
    args.min_sample_ms = args.min_sample_ms or (20.0 if quick else 50.0)
    # Dynamo compiles a method once per layer instance it is bound to (LLFlow has 18 InvConv1x1
    # layers); the default limit of 8 would quietly leave the rest eager.
    torch._dynamo.config.recompile_limit = 64
    rows = [row for threads in args.threads for row in run(args, threads)]
    device = torch.device(args.device)
    command = "python benchmarks/llflow.py " + " ".join(
        a if not a.startswith("/") else "<dir>" for a in (argv if argv is not None else sys.argv[1:]))
    result = {
        "benchmark": "llflow",
        "environment": environment(device),
        "settings": {"preset": args.preset, "config": repr(PRESETS[args.preset]()), "size": args.size,
                     "cases": args.cases, "threads": args.threads, "rounds": args.rounds,
                     "min_sample_ms": args.min_sample_ms, "compile": args.compile,
                     "reference": args.reference_dir is not None, "memory": args.memory, "command": command},
        "rows": rows,
    }
    markdown = report(result)
    stem = f"llflow_{device_tag(device)}_{args.preset}" + (f"_{args.tag}" if args.tag else "")
    paths = write_results(stem, result, markdown, args.out)
    print(markdown)
    print("\nwrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
