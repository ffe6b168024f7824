"""Benchmark invertible backpropagation (``flowkit.memory``): peak memory and time of a training step.

Each workload runs in both memory modes: ``standard`` (autograd stores every activation) and
``invertible`` (the flow keeps only its levels' outputs and rebuilds the rest by inversion in
backward):

* **depth sweep**: LLFlow's ``ConditionalFlow`` with ``K`` = 4, 8, 16, 32 conditional steps per
  level (plus 2 transition steps) at a fixed image size, conditioned on random feature maps that
  receive gradients; one training step is the NLL, its backward and an Adam step;
* **LLFlow**, ``LLFlowConfig.lol()``, at two patch sizes: the whole training step (encoder and flow,
  ``LLFlow.loss``), and its flow part alone (the encoder's features computed without autograd and
  then given ``requires_grad``, so the flow's backward still produces their gradient).

**Memory**: every case runs in a fresh subprocess. The model is initialised (ActNorm's data pass),
gradients are preallocated and the optimizer state created (an Adam step on zero gradients, which
leaves the parameters unchanged): that is the state *at rest*. Then one training step runs, and the
peak of its forward and backward above rest is reported (activations and temporaries: what the
memory mode changes), with the rest and the total peak beside it. The optimizer step itself is left
out of the window: its temporaries scale with the parameter count (foreach Adam on CUDA) and do not
depend on the memory mode. CPU: resident memory (``VmRSS``), peak ``VmHWM`` reset just
before the step through ``/proc/self/clear_refs``, with glibc's mmap threshold fixed so that freed
tensors go back to the system. CUDA: ``torch.cuda.memory_allocated`` and
``max_memory_allocated``.

**Time**: both modes in one process with identical weights, called in a new random order each
round, one step per sample; the ratio is the median over rounds of invertible/standard within a
round. On a CPU only the ratios mean anything.

Usage::

    python benchmarks/memory.py --quick        # CPU: a small sweep, lol at 32 and 64 patches, batch 1 (minutes)
    python benchmarks/memory.py                # GPU: sweep at 16x3x160x160 with lol's widths; lol at 160 and 320
    python benchmarks/memory.py --device cpu --workloads llflow --batch 1 --rounds 2   # CPU, real patches (~1 h)

Results go to ``benchmarks/results/memory_<device>[_quick].json`` and ``.md``; the depth sweep is
plotted to ``docs/_static/figures/memory_depth.png`` (``--figure``; ``--no-figure`` skips it).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _timing import Stats, device_tag, environment, markdown_table, synchronize, write_results

from flowkit.models import LLFlow, LLFlowConfig
from flowkit.models.llflow.flow import ConditionalFlow
from flowkit.models.llflow.histeq import histeq_image

MODES = ("standard", "invertible")
DEPTHS = (4, 8, 16, 32)
FIGURE = Path(__file__).resolve().parents[1] / "docs" / "_static" / "figures" / "memory_depth.png"
MB = 2**20


# -- the workloads -----------------------------------------------------------------------------


def make_images(batch: int, size: int, device: torch.device, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    high = torch.rand(batch, 3, size, size, generator=gen)
    low = high * (0.05 + 0.15 * torch.rand(batch, 1, 1, 1, generator=gen))
    return low.to(device), high.to(device), histeq_image(low).to(device)


def _nll(z: torch.Tensor, logdet: torch.Tensor) -> torch.Tensor:
    return (0.5 * z.square().flatten(1).sum(1) - logdet).mean()


def build(case: dict, device: torch.device) -> tuple[Callable[[], torch.Tensor], list[torch.Tensor], list]:
    """``(loss function, parameters to optimise, leaves whose gradients are kept)`` for one case."""
    torch.manual_seed(0)
    batch, size = case["batch"], case["size"]
    if case["workload"] == "sweep":
        width = case["width"]
        flow = ConditionalFlow(width, case["depth"], transition_steps=2, hidden_channels=case["hidden"],
                               memory=case["mode"]).to(device)
        gen = torch.Generator().manual_seed(2)
        x = torch.rand(batch, 3, size, size, generator=gen).to(device)
        conds = [torch.randn(batch, width, size >> (level + 1), size >> (level + 1), generator=gen)
                 .to(device).requires_grad_(True) for level in range(3)]
        return (lambda: _nll(*flow(x, conds))), list(flow.parameters()), conds
    model = LLFlow(LLFlowConfig.lol()).to(device)
    # Set on the flow directly, so the benchmark does not depend on how LLFlow reads its config.
    model.flow.memory = case["mode"]
    low, high, histeq = make_images(batch, size, device)
    if case["workload"] == "llflow":
        selector = torch.Generator(device=device).manual_seed(0)
        return (lambda: model.loss(low, high, histeq=histeq, generator=selector)), list(model.parameters()), []
    with torch.no_grad():
        model.train()
        model.loss(low, high, histeq=histeq)  # ActNorm's data pass, encoder included
        conditions = [c.detach().requires_grad_(True) for c in model.condition(low, histeq=histeq).conditions]
    return (lambda: _nll(*model.flow(high, conditions))), list(model.flow.parameters()), conditions


# -- memory, measured in a fresh process per case ------------------------------------------------


def _proc_status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {key: int(re.search(rf"{key}:\s+(\d+)", text).group(1)) * 1024 for key in ("VmRSS", "VmHWM")}


def _memory_now(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return _proc_status()["VmRSS"]


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def _peak(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return _proc_status()["VmHWM"]


def measure(case: dict) -> dict:
    """One case's memory at rest, peak during one training step, and that step's time."""
    device = torch.device(case["device"])
    torch.set_num_threads(case["threads"])
    loss_fn, params, leaves = build(case, device)
    with torch.no_grad():
        loss_fn()  # ActNorm's data-dependent initialisation, as a training run's first pass
    for tensor in params + leaves:
        tensor.grad = torch.zeros_like(tensor)
    optimizer = torch.optim.Adam(params, lr=1e-5)
    optimizer.step()  # creates the optimizer state; zero gradients leave the parameters unchanged
    gc.collect()
    synchronize(device)
    rest = _memory_now(device)
    _reset_peak(device)
    began = time.perf_counter()
    optimizer.zero_grad(set_to_none=False)
    loss = loss_fn()
    loss.backward()
    synchronize(device)
    peak = _peak(device)
    optimizer.step()
    synchronize(device)
    seconds = time.perf_counter() - began
    return {**case, "rest_mb": rest / MB, "step_mb": (peak - rest) / MB, "peak_mb": peak / MB,
            "first_step_s": seconds, "loss": float(loss.detach())}


def measure_in_subprocess(case: dict) -> dict:
    env = dict(os.environ)
    # A fixed threshold: every tensor above 64 KiB is its own mapping, returned to the system when
    # freed, so that resident memory follows the live tensors (glibc otherwise raises the threshold).
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    done = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], capture_output=True, text=True,
                          env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"case {case} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- time, both modes interleaved in one process -------------------------------------------------


def time_modes(case: dict, rounds: int) -> dict[str, Stats]:
    """Seconds per training step of each mode, sampled round by round in a random order."""
    device = torch.device(case["device"])
    steps = {}
    for mode in MODES:
        loss_fn, params, leaves = build({**case, "mode": mode}, device)
        optimizer = torch.optim.Adam(params, lr=1e-5)

        def step(loss_fn=loss_fn, optimizer=optimizer, leaves=leaves):
            optimizer.zero_grad(set_to_none=True)
            for leaf in leaves:
                leaf.grad = None
            loss_fn().backward()
            optimizer.step()
        step()  # warm-up: ActNorm initialisation, allocator, kernel selection
        steps[mode] = step
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    order, shuffle = list(MODES), random.Random(0)
    for _ in range(rounds):
        shuffle.shuffle(order)
        for mode in order:
            synchronize(device)
            began = time.perf_counter()
            steps[mode]()
            synchronize(device)
            samples[mode].append(time.perf_counter() - began)
    return {mode: Stats.of(values) for mode, values in samples.items()}


# -- the run -------------------------------------------------------------------------------------


def settings_for(args: argparse.Namespace) -> dict:
    if args.quick:
        sweep = {"batch": 2, "size": 64, "width": 32, "hidden": 32}
        llflow = {"batch": args.batch or 1, "sizes": [32, 64]}
    else:
        sweep = {"batch": 16, "size": 160, "width": 320, "hidden": 64}  # lol's cond and hidden widths
        llflow = {"batch": args.batch or 8, "sizes": [160, 320]}
    return {"quick": args.quick, "sweep": sweep, "llflow": llflow, "rounds": args.rounds,
            "threads": args.threads, "depths": list(DEPTHS), "workloads": args.workloads}


def run(args: argparse.Namespace) -> dict:
    settings = settings_for(args)
    base = {"device": args.device, "threads": args.threads}
    sweep_rows, llflow_rows, time_rows, timed = [], [], [], []
    for depth in DEPTHS if "sweep" in args.workloads else ():
        for mode in MODES:
            case = {**base, "workload": "sweep", "mode": mode, "depth": depth, **settings["sweep"]}
            row = measure_in_subprocess(case)
            sweep_rows.append(row)
            print(f"  sweep K={depth:2d} {mode:10s}: {row['step_mb']:8.1f} MiB above rest", file=sys.stderr)
    for size in settings["llflow"]["sizes"] if "llflow" in args.workloads else ():
        for workload in ("llflow", "llflow_flow"):
            for mode in MODES:
                case = {**base, "workload": workload, "mode": mode, "size": size, "batch": settings["llflow"]["batch"]}
                row = measure_in_subprocess(case)
                llflow_rows.append(row)
                print(f"  {workload} {size} {mode:10s}: {row['step_mb']:8.1f} MiB above rest", file=sys.stderr)
    if "sweep" in args.workloads:
        timed.append({**base, "workload": "sweep", "depth": DEPTHS[-1], **settings["sweep"]})
    if "llflow" in args.workloads:
        sizes = settings["llflow"]["sizes"][:1] if args.quick else settings["llflow"]["sizes"]
        timed += [{**base, "workload": "llflow", "size": size, "batch": settings["llflow"]["batch"]} for size in sizes]
    torch.set_num_threads(args.threads)
    for case in timed:
        stats = time_modes(case, args.rounds)
        ratios = [i / s for i, s in zip(stats["invertible"].values, stats["standard"].values)]
        time_rows.append({"workload": _workload_name(case), "standard_ms": stats["standard"].median * 1e3,
                          "invertible_ms": stats["invertible"].median * 1e3,
                          "ratio": statistics.median(ratios), "rounds": args.rounds,
                          "standard": stats["standard"], "invertible": stats["invertible"]})
        print(f"  time {_workload_name(case)}: invertible/standard {time_rows[-1]['ratio']:.2f}", file=sys.stderr)
    return {"benchmark": "memory", "environment": environment(torch.device(args.device)), "settings": settings,
            "sweep": sweep_rows, "llflow": llflow_rows, "time": time_rows, "targets": targets(sweep_rows,
                                                                                                 llflow_rows, time_rows)}


def _workload_name(case: dict) -> str:
    shape = f"{case['batch']}x3x{case['size']}x{case['size']}"
    if case["workload"] == "sweep":
        return f"flow K={case['depth']}, {shape}"
    return f"LLFlow lol step, {shape}"


def _row(rows: list[dict], **match) -> dict:
    return next(r for r in rows if all(r.get(k) == v for k, v in match.items()))


def _depth_ratio(sweep: list[dict], mode: str) -> float | None:
    if not sweep:
        return None
    return _row(sweep, mode=mode, depth=DEPTHS[-1])["step_mb"] / _row(sweep, mode=mode, depth=DEPTHS[0])["step_mb"]


def targets(sweep: list[dict], llflow: list[dict], timing: list[dict]) -> dict:
    """The issue's targets, computed from the rows."""
    reductions = {}
    for size in sorted({r["size"] for r in llflow}):
        for workload in ("llflow", "llflow_flow"):
            std = _row(llflow, workload=workload, size=size, mode="standard")["step_mb"]
            inv = _row(llflow, workload=workload, size=size, mode="invertible")["step_mb"]
            reductions[f"{'whole step' if workload == 'llflow' else 'flow part'} {size}"] = std / inv
    return {
        "sweep_invertible_K32_over_K4": _depth_ratio(sweep, "invertible"),
        "sweep_standard_K32_over_K4": _depth_ratio(sweep, "standard"),
        "activation_reduction": reductions,
        "llflow_time_ratio": {r["workload"]: r["ratio"] for r in timing if r["workload"].startswith("LLFlow")},
    }


SWEEP_COLUMNS = [("depth", "K", ""), ("mode", "mode", ""), ("step_mb", "step peak above rest MiB", ".1f"),
                 ("rest_mb", "at rest MiB", ".1f"), ("peak_mb", "total peak MiB", ".1f"),
                 ("first_step_s", "first step s", ".2f")]
LLFLOW_COLUMNS = [("size", "patch", ""), ("part", "part", ""), ("mode", "mode", ""),
                  ("step_mb", "step peak above rest MiB", ".1f"), ("rest_mb", "at rest MiB", ".1f"),
                  ("peak_mb", "total peak MiB", ".1f"), ("first_step_s", "first step s", ".2f")]
TIME_COLUMNS = [("workload", "workload", ""), ("standard_ms", "standard ms", ".1f"),
                ("invertible_ms", "invertible ms", ".1f"), ("ratio", "invertible / standard", ".2f"),
                ("rounds", "rounds", "")]


def report(result: dict) -> str:
    env, settings, goals = result["environment"], result["settings"], result["targets"]
    unit = "resident memory (RSS)" if env["device_type"] == "cpu" else "CUDA allocated memory"
    sweep, llflow = settings["sweep"], settings["llflow"]
    llflow_rows = [{**r, "part": "whole step" if r["workload"] == "llflow" else "flow part"} for r in result["llflow"]]
    lines = [
        f"# Invertible backpropagation: memory and time on {env['device']}",
        "",
        f"torch {env['torch']}, {env['threads']} threads, {env['date_utc']} UTC, commit {env['commit']}"
        + (" (--quick)" if settings["quick"] else "") + f". Memory is {unit}, one fresh process per row; "
        "'at rest' is parameters, gradients, optimizer state and inputs; 'step peak above rest' is what the "
        "forward and backward of one training step add (activations and temporaries).",
    ]
    if result["sweep"]:
        lines += [
            "",
            f"## Depth sweep: ConditionalFlow, {sweep['batch']}x3x{sweep['size']}x{sweep['size']}, conditioning "
            f"{sweep['width']} channels, hidden {sweep['hidden']}, K steps per level",
            "",
            markdown_table(result["sweep"], SWEEP_COLUMNS),
            "",
            f"Invertible K={DEPTHS[-1]} / K={DEPTHS[0]} (activation memory): "
            f"{goals['sweep_invertible_K32_over_K4']:.2f} (target <= 1.25); standard: "
            f"{goals['sweep_standard_K32_over_K4']:.2f}.",
        ]
    if result["llflow"]:
        lines += [
            "",
            f"## LLFlow (lol preset), batch {llflow['batch']}",
            "",
            markdown_table(llflow_rows, LLFLOW_COLUMNS),
            "",
            "Activation memory, standard / invertible: "
            + ", ".join(f"{k}: {v:.2f}x" for k, v in goals["activation_reduction"].items())
            + " (target for the flow part >= 3x).",
        ]
    lines += [
        "",
        "## Time per training step (interleaved, medians)",
        "",
        markdown_table(result["time"], TIME_COLUMNS),
        "",
        "Target: LLFlow step time invertible / standard <= 1.5.",
    ]
    if env["device_type"] == "cpu":
        lines += ["", "CPU run on a shared machine: absolute times are noisy; read the ratios only."]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep, env = result["settings"]["sweep"], result["environment"]
    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=120)
    for mode, style in (("standard", "o-"), ("invertible", "s-")):
        rows = sorted((r for r in result["sweep"] if r["mode"] == mode), key=lambda r: r["depth"])
        ax.plot([r["depth"] for r in rows], [r["step_mb"] for r in rows], style, label=f"{mode} backprop")
    ax.set_xticks(list(DEPTHS), [str(d) for d in DEPTHS])
    ax.set_xlabel("K (conditional steps per level)")
    ax.set_ylabel("training-step memory above rest (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"ConditionalFlow {sweep['batch']}x3x{sweep['size']}x{sweep['size']}, {env['device']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a CPU (a few minutes)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None, help="LLFlow batch (default 8, quick 1)")
    parser.add_argument("--rounds", type=int, default=None, help="timed steps per mode (default 10, quick 3)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--workloads", nargs="+", choices=["sweep", "llflow"], default=["sweep", "llflow"],
                        help="which workloads to run (default both)")
    parser.add_argument("--figure", type=Path, default=FIGURE, help="where to plot memory vs depth")
    parser.add_argument("--no-figure", action="store_true", help="do not plot")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: measure one case, print JSON
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(measure(json.loads(args.case))))
        return
    args.rounds = args.rounds or (3 if args.quick else 10)
    result = run(args)
    markdown = report(result)
    stem = f"memory_{device_tag(torch.device(args.device))}" + ("_quick" if args.quick else "")
    paths = write_results(stem, result, markdown)
    if result["sweep"] and not args.no_figure:
        plot(result, args.figure)
        paths.append(args.figure)
    print(markdown)
    print("\nwrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
