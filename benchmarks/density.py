"""Benchmark density estimation: flowkit's NSF, MAF and RealNVP recipes, and zuko's and nflows' where installed.

Every model is trained side by side in one process on the same batches: each round draws a fresh
batch and runs one training step (loss, backward, Adam) of every variant, in a new random order,
timing each step. At the end each model's negative log-likelihood is measured on a held-out test
set (nats per sample, lower is better). Reported: test NLL, the median step time with its
interquartile range, and the step-time ratio to the flowkit model of the same family (the median
over rounds of the per-round ratio, which cancels the slow load drifts of a shared machine).

Data sets (all generated here, offline): ``two_moons``, ``eight_gaussians`` and ``checkerboard``
(2-D), ``cond_two_moons`` (2-D given the moon's label) and ``warped10`` (10-D: a Gaussian mixture
pushed through a fixed random rotation and an element-wise warp).

Variants: ``flowkit NSF/MAF/RealNVP`` (eager), with ``--compile`` the same under
``torch.compile(fullgraph=True)``, and the comparable models of zuko (``zuko.flows.NSF/MAF``) and
nflows (masked autoregressive spline and affine transforms with reverse permutations) when those
packages are importable: ``pip install zuko nflows``. They are optional; when one is missing the
script says so and goes on without it. Sizes are the same for all: ``--transforms`` layers of MLPs
with two hidden layers of ``--hidden`` units, ``--bins`` spline bins on ``[-5, 5]``.

Usage::

    python benchmarks/density.py --quick              # CPU: two 2-D sets, a few hundred steps
    python benchmarks/density.py --compile            # every set, the full number of steps

Results go to ``benchmarks/results/density_<device>[_quick].json`` and ``.md`` (``--output`` to change).
"""

from __future__ import annotations

import argparse
import functools
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from _timing import RESULTS, Stats, device_tag, environment, markdown_table, synchronize, write_results
from torch import Tensor, nn

from flowkit.recipes import MAF, NSF, RealNVP

# ---------------------------------------------------------------------------------------------
# Data sets: sample(n, generator) -> (x, context or None).


def two_moons(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    label = torch.randint(0, 2, (n,), generator=g)
    angle = torch.rand(n, generator=g) * math.pi
    upper = torch.stack([angle.cos(), angle.sin()], 1)
    lower = torch.stack([1 - angle.cos(), 0.5 - angle.sin()], 1)
    x = torch.where(label[:, None] == 0, upper, lower) + 0.1 * torch.randn(n, 2, generator=g)
    return (x - torch.tensor([0.5, 0.25])) * 1.5, label[:, None].float()


def eight_gaussians(n: int, g: torch.Generator) -> tuple[Tensor, None]:
    k = torch.randint(0, 8, (n,), generator=g).float() * (math.pi / 4)
    centres = 2.0 * torch.stack([k.cos(), k.sin()], 1)
    return centres + 0.2 * torch.randn(n, 2, generator=g), None


def checkerboard(n: int, g: torch.Generator) -> tuple[Tensor, None]:
    x1 = torch.rand(n, generator=g) * 4 - 2
    x2 = torch.rand(n, generator=g) - 2 * torch.randint(0, 2, (n,), generator=g).float()
    x2 = x2 + torch.floor(x1) % 2
    return torch.stack([x1, x2], 1) * 1.5, None


def _warped10_constants() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1234)  # fixed: the data set is the same in every run
    rotation, _ = torch.linalg.qr(torch.randn(10, 10, generator=g))
    means = 1.5 * torch.randn(4, 10, generator=g)
    return rotation, means


_WARPED10 = _warped10_constants()


def warped10(n: int, g: torch.Generator) -> tuple[Tensor, None]:
    rotation, means = _WARPED10
    z = means[torch.randint(0, 4, (n,), generator=g)] + 0.5 * torch.randn(n, 10, generator=g)
    y = z @ rotation
    return y + 0.5 * torch.sin(1.5 * y), None


@dataclass(frozen=True)
class DataSet:
    name: str
    features: int
    context: int
    sample: Callable[[int, torch.Generator], tuple[Tensor, Tensor | None]]


def _drop_context(sample: Callable) -> Callable:
    return lambda n, g: (sample(n, g)[0], None)


DATASETS = {
    "two_moons": DataSet("two_moons", 2, 0, _drop_context(two_moons)),
    "eight_gaussians": DataSet("eight_gaussians", 2, 0, eight_gaussians),
    "checkerboard": DataSet("checkerboard", 2, 0, checkerboard),
    "cond_two_moons": DataSet("cond_two_moons", 2, 1, two_moons),
    "warped10": DataSet("warped10", 10, 0, warped10),
}

# ---------------------------------------------------------------------------------------------
# Models: a module with parameters and a log_prob(x, context) callable.


@dataclass
class Variant:
    name: str
    family: str  # "NSF", "MAF" or "RealNVP": ratios are to the flowkit model of the same family
    module: nn.Module
    log_prob: Callable[[Tensor, Tensor | None], Tensor]


def flowkit_variants(data: DataSet, args: argparse.Namespace) -> list[Variant]:
    sizes = {"context": data.context, "transforms": args.transforms, "hidden_features": (args.hidden,) * 2}
    builders = {
        "NSF": functools.partial(NSF, data.features, bins=args.bins, bound=5.0, **sizes),
        "MAF": functools.partial(MAF, data.features, **sizes),
        "RealNVP": functools.partial(RealNVP, data.features, **sizes),
    }
    variants = []
    for family, build in builders.items():
        torch.manual_seed(0)
        model = build()
        variants.append(Variant(f"flowkit {family}", family, model, model.log_prob))
        if args.compile:
            torch.manual_seed(0)
            compiled = build()
            log_prob = torch.compile(compiled.log_prob, fullgraph=True)
            variants.append(Variant(f"flowkit {family} compiled", family, compiled, log_prob))
    return variants


def zuko_variants(data: DataSet, args: argparse.Namespace) -> list[Variant]:
    try:
        import zuko
    except ImportError:
        print("zuko is not installed: its models are skipped (pip install zuko)", file=sys.stderr)
        return []
    hidden = (args.hidden,) * 2
    flows = {
        "NSF": zuko.flows.NSF(data.features, data.context, transforms=args.transforms, hidden_features=hidden, bins=args.bins),
        "MAF": zuko.flows.MAF(data.features, data.context, transforms=args.transforms, hidden_features=hidden),
    }

    def log_prob(flow: nn.Module, x: Tensor, c: Tensor | None) -> Tensor:
        return flow(c).log_prob(x)

    return [Variant(f"zuko {family}", family, flow, functools.partial(log_prob, flow)) for family, flow in flows.items()]


def nflows_variants(data: DataSet, args: argparse.Namespace) -> list[Variant]:
    try:
        from nflows.distributions.normal import StandardNormal
        from nflows.flows.base import Flow
        from nflows.transforms.autoregressive import (
            MaskedAffineAutoregressiveTransform,
            MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
        )
        from nflows.transforms.base import CompositeTransform
        from nflows.transforms.permutations import ReversePermutation
    except ImportError:
        print("nflows is not installed: its models are skipped (pip install nflows)", file=sys.stderr)
        return []
    # Two hidden layers as in the other libraries: nflows' MADE has an input layer, then num_blocks
    # hidden blocks; plain (not residual) blocks.
    made = {"hidden_features": args.hidden, "context_features": data.context or None, "num_blocks": 1,
            "use_residual_blocks": False}

    def chain(layer: Callable[[], nn.Module]) -> nn.Module:
        layers: list[nn.Module] = []
        for _ in range(args.transforms):
            layers += [layer(), ReversePermutation(data.features)]
        return Flow(CompositeTransform(layers), StandardNormal([data.features]))

    flows = {
        "NSF": chain(lambda: MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
            features=data.features, num_bins=args.bins, tails="linear", tail_bound=5.0, **made)),
        "MAF": chain(lambda: MaskedAffineAutoregressiveTransform(features=data.features, **made)),
    }

    def log_prob(flow: nn.Module, x: Tensor, c: Tensor | None) -> Tensor:
        return flow.log_prob(x, context=c)

    return [Variant(f"nflows {family}", family, flow, functools.partial(log_prob, flow)) for family, flow in flows.items()]


# ---------------------------------------------------------------------------------------------


def train_side_by_side(data: DataSet, variants: list[Variant], args: argparse.Namespace, device: torch.device) -> list[dict]:
    optimizers = {}
    for v in variants:
        v.module.to(device).train()
        optimizers[v.name] = torch.optim.Adam(v.module.parameters(), lr=args.lr)
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    order = list(variants)
    shuffle = random.Random(0)
    batches = torch.Generator().manual_seed(1)
    for step in range(args.steps):
        x, c = data.sample(args.batch, batches)
        x, c = x.to(device), None if c is None else c.to(device)
        shuffle.shuffle(order)
        for v in order:
            synchronize(device)
            began = time.perf_counter()
            optimizer = optimizers[v.name]
            optimizer.zero_grad(set_to_none=True)
            loss = -v.log_prob(x, c).mean()
            loss.backward()
            optimizer.step()
            synchronize(device)
            if step >= args.warmup:  # the first steps pay for compilation and allocator warm-up
                times[v.name].append(time.perf_counter() - began)
    x_test, c_test = data.sample(args.test_size, torch.Generator().manual_seed(2))
    x_test, c_test = x_test.to(device), None if c_test is None else c_test.to(device)
    rows = []
    for v in variants:
        v.module.eval()
        with torch.no_grad():
            nll = -float(v.log_prob(x_test, c_test).mean())
        stats = Stats.of(times[v.name])
        reference = times[f"flowkit {v.family}"]
        ratio = statistics.median(t / r for t, r in zip(times[v.name], reference))
        rows.append({"data": data.name, "variant": v.name, "test_nll": nll, "median_ms": stats.median * 1e3,
                     "iqr_ms": stats.iqr * 1e3, "vs_flowkit": ratio, "steps": args.steps})
    return rows


COLUMNS = [("data", "data", ""), ("variant", "model", ""), ("test_nll", "test NLL (nats)", ".4f"),
           ("median_ms", "step ms (median)", ".2f"), ("iqr_ms", "IQR ms", ".2f"),
           ("vs_flowkit", "step time / flowkit eager", ".2f")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two 2-D sets and 300 steps (CPU, a few minutes)")
    parser.add_argument("--data", nargs="*", choices=sorted(DATASETS), help="data sets (default: all; quick: two)")
    parser.add_argument("--compile", action="store_true", help="add torch.compile(fullgraph=True) flowkit variants")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 5000, quick 300)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed first steps")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--transforms", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--bins", type=int, default=8)
    parser.add_argument("--test-size", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="folder for the result files")
    args = parser.parse_args(argv)
    args.steps = args.steps or (300 if args.quick else 5000)
    names = args.data or (["two_moons", "cond_two_moons"] if args.quick else sorted(DATASETS))
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name in names:
        data = DATASETS[name]
        torch._dynamo.reset()
        variants = flowkit_variants(data, args) + zuko_variants(data, args) + nflows_variants(data, args)
        rows += train_side_by_side(data, variants, args, device)
        print(f"  {name}: " + ", ".join(f"{r['variant']} {r['test_nll']:.3f}" for r in rows if r["data"] == name),
              file=sys.stderr)
    env = environment(device)
    settings = {key: value for key, value in vars(args).items() if key != "output"}
    markdown = "\n".join([
        f"# density benchmark on {env['device']}",
        "",
        f"torch {env['torch']}, {env['threads']} threads, {env['date_utc']} UTC, commit {env['commit']}; "
        f"{args.steps} steps of batch {args.batch} (Adam, lr {args.lr}), {args.transforms} transforms, "
        f"hidden ({args.hidden}, {args.hidden}), {args.bins} bins; test NLL on {args.test_size} held-out samples."
        + (" CPU run: read the time ratios only." if device.type == "cpu" else ""),
        "",
        markdown_table(rows, COLUMNS),
    ])
    stem = f"density_{device_tag(device)}" + ("_quick" if args.quick else "")
    paths = write_results(stem, {"benchmark": "density", "environment": env, "settings": settings, "rows": rows},
                          markdown, args.output)
    print(markdown)
    print("\nwrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
