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

Variants: ``flowkit NSF/MAF/RealNVP`` and the comparable models of zuko (``zuko.flows.NSF/MAF``, and
RealNVP as zuko's affine couplings on flowkit's masks) and nflows (masked autoregressive spline and
affine transforms with reverse permutations, affine couplings) when those packages are importable:
``pip install zuko nflows`` (the ``bench`` extra). They are optional; when one is missing the script
says so and goes on without it. With ``--compile`` every model also gets a fresh copy (same initial
weights) under ``torch.compile(fullgraph=True)``, or the default ``fullgraph=False`` where Dynamo
cannot trace it in one graph (the row says "graph breaks"). Sizes are the same for all:
``--transforms`` layers of MLPs or MADEs with two hidden layers of ``--hidden`` units, ``--bins``
spline bins on ``[-5, 5]`` with linear tails; the same optimiser, seed, batches and steps.
Each model is trained ``--seeds`` times (initial weights and batches from seeds 0, 1, ...): on 2-D
toy densities the test NLL of one architecture varies by tenths of a nat from seed to seed, so NLLs
are compared as means over seeds, with their standard deviations.

Usage::

    python benchmarks/density.py --quick              # CPU: two 2-D sets, a few hundred steps
    python benchmarks/density.py --compile            # every set, the full number of steps (long on a CPU)
    python benchmarks/density.py --nflows-equivalence # flowkit's NSF with nflows' weights: log p to 1e-13

Results go to ``benchmarks/results/density_<device>[_quick].json`` and ``.md`` (``--output`` to change).
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
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
    library: str  # "flowkit", "zuko" or "nflows"
    family: str  # "NSF", "MAF" or "RealNVP": ratios are to the flowkit model of the same family
    module: nn.Module
    log_prob: Callable[[Tensor, Tensor | None], Tensor]
    compiled: str = ""  # "", "fullgraph", or "graph breaks" (then compiled with the default fullgraph=False)


def _with_compiled(variants: list[Variant], data: DataSet, args: argparse.Namespace, build_again: Callable[[str], Variant]) -> list[Variant]:
    """``variants``, each followed (with ``--compile``) by a fresh copy under ``torch.compile``.

    The copy (``build_again(family)``, same seed, so the same initial weights) is first compiled with
    ``fullgraph=True`` on a probe batch; where Dynamo cannot trace the model in one graph, the
    copy is compiled with the default ``fullgraph=False`` instead and the row says "graph breaks".
    """
    if not args.compile:
        return variants
    probe_x, probe_c = data.sample(args.batch, torch.Generator().manual_seed(3))
    out = []
    for v in variants:
        out.append(v)
        twin = build_again(v.family)
        compiled = torch.compile(twin.log_prob, fullgraph=True)
        try:
            compiled(probe_x, probe_c)
            mode = "fullgraph"
        except torch._dynamo.exc.TorchDynamoException as error:
            reason = str(error).strip().splitlines()[0][:160]
            print(f"{twin.name} does not compile with fullgraph=True ({reason}); "
                  "timing torch.compile with graph breaks instead", file=sys.stderr)
            compiled, mode = torch.compile(twin.log_prob), "graph breaks"
        out.append(Variant(f"{twin.name} compiled", twin.library, twin.family, twin.module, compiled, mode))
    return out


class _LogProb(nn.Module):
    """Another library's flow with its log-density as the module's call (what is trained and compiled)."""

    def __init__(self, flow: nn.Module, log_prob: Callable[[nn.Module, Tensor, Tensor | None], Tensor]) -> None:
        super().__init__()
        self.flow = flow
        self.log_prob = log_prob

    def forward(self, x: Tensor, c: Tensor | None) -> Tensor:
        return self.log_prob(self.flow, x, c)


def _half_masks(features: int, transforms: int) -> list[list[bool]]:
    """Which features pass through each coupling: as flowkit's RealNVP, alternately the first and the second half."""
    first = [i < features // 2 for i in range(features)]
    return [first if t % 2 == 0 else [not b for b in first] for t in range(transforms)]


def flowkit_variants(data: DataSet, args: argparse.Namespace) -> list[Variant]:
    sizes = {"cond_features": data.context, "transforms": args.transforms, "hidden_features": (args.hidden,) * 2}
    builders = {
        "NSF": functools.partial(NSF, data.features, bins=args.bins, bound=args.bound, **sizes),
        "MAF": functools.partial(MAF, data.features, **sizes),
        "RealNVP": functools.partial(RealNVP, data.features, **sizes),
    }

    def build(family: str) -> Variant:
        torch.manual_seed(args.seed)
        model = builders[family]()
        return Variant(f"flowkit {family}", "flowkit", family, model, model.log_prob)

    return _with_compiled([build(family) for family in builders], data, args, build)


def zuko_variants(data: DataSet, args: argparse.Namespace) -> list[Variant]:
    try:
        import zuko
    except ImportError:
        print("zuko is not installed: its models are skipped (pip install zuko)", file=sys.stderr)
        return []
    hidden = (args.hidden,) * 2

    def real_nvp() -> nn.Module:
        # zuko.flows.RealNVP alternates checkered masks; the same couplings on flowkit's halves masks
        # make the comparison exact on the 10-D set too (on 2-D data the two are the same).
        couplings = [zuko.flows.GeneralCouplingTransform(data.features, data.context, torch.tensor(mask),
                                                         hidden_features=hidden)
                     for mask in _half_masks(data.features, args.transforms)]
        base = zuko.flows.UnconditionalDistribution(zuko.distributions.DiagNormal, torch.zeros(data.features),
                                                    torch.ones(data.features), buffer=True)
        return zuko.flows.Flow(couplings, base)

    builders = {
        "NSF": lambda: zuko.flows.NSF(data.features, data.context, transforms=args.transforms, hidden_features=hidden,
                                      bins=args.bins),
        "MAF": lambda: zuko.flows.MAF(data.features, data.context, transforms=args.transforms, hidden_features=hidden),
        "RealNVP": real_nvp,
    }

    def build(family: str) -> Variant:
        torch.manual_seed(args.seed)
        module = _LogProb(builders[family](), lambda flow, x, c: flow(c).log_prob(x))
        return Variant(f"zuko {family}", "zuko", family, module, module)

    if args.bound != 5.0:
        raise SystemExit("zuko's NSF has its spline on [-5, 5]: run with --bound 5 to compare with zuko")
    return _with_compiled([build(family) for family in builders], data, args, build)


def nflows_variants(data: DataSet, args: argparse.Namespace) -> list[Variant]:
    try:
        from nflows.distributions.normal import StandardNormal
        from nflows.flows.base import Flow
        from nflows.transforms.autoregressive import (
            MaskedAffineAutoregressiveTransform,
            MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
        )
        from nflows.transforms.base import CompositeTransform
        from nflows.transforms.coupling import AffineCouplingTransform
        from nflows.transforms.permutations import ReversePermutation
    except ImportError:
        print("nflows is not installed: its models are skipped (pip install nflows)", file=sys.stderr)
        return []
    # Two hidden layers as in the other libraries: nflows' MADE has an input layer, then num_blocks
    # hidden blocks; plain (not residual) blocks.
    made = {"hidden_features": args.hidden, "context_features": data.context or None, "num_blocks": 1,
            "use_residual_blocks": False}

    class CouplingNet(nn.Module):
        """The MLP of flowkit's RealNVP couplings (two hidden layers), reading the context too."""

        def __init__(self, in_features: int, out_features: int) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(in_features + data.context, args.hidden), nn.ReLU(),
                                     nn.Linear(args.hidden, args.hidden), nn.ReLU(),
                                     nn.Linear(args.hidden, out_features))

        def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
            return self.net(x if context is None else torch.cat([x, context], dim=1))

    def chain(layer: Callable[[], nn.Module]) -> nn.Module:
        layers: list[nn.Module] = []
        for _ in range(args.transforms):
            layers += [layer(), ReversePermutation(data.features)]
        return Flow(CompositeTransform(layers), StandardNormal([data.features]))

    def real_nvp() -> nn.Module:
        # nflows' mask: > 0 is transformed, <= 0 passes through; the same halves as flowkit's RealNVP.
        couplings = [AffineCouplingTransform(torch.tensor([-1 if keep else 1 for keep in mask]), CouplingNet)
                     for mask in _half_masks(data.features, args.transforms)]
        return Flow(CompositeTransform(couplings), StandardNormal([data.features]))

    builders = {
        "NSF": lambda: chain(lambda: MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
            features=data.features, num_bins=args.bins, tails="linear", tail_bound=args.bound, **made)),
        "MAF": lambda: chain(lambda: MaskedAffineAutoregressiveTransform(features=data.features, **made)),
        "RealNVP": real_nvp,
    }

    def build(family: str) -> Variant:
        torch.manual_seed(args.seed)
        module = _LogProb(builders[family](), lambda flow, x, c: flow.log_prob(x, context=c))
        return Variant(f"nflows {family}", "nflows", family, module, module)

    return _with_compiled([build(family) for family in builders], data, args, build)


def nflows_nsf_equivalence(data: DataSet, args: argparse.Namespace) -> float:
    """Largest |log p| difference between nflows' NSF and flowkit's NSF given nflows' initial weights.

    Float64, on 1000 samples of an unconditional set. The weights map one to one: layer ``l`` of
    nflows reads the features reversed ``l`` times, as flowkit's layer ``l`` reads them in its
    alternating order (input columns and output blocks flipped), and nflows' raw knot derivatives
    are flowkit's plus ``log(e^(1 - min_derivative) - 1)`` (see RationalQuadraticSpline). A
    difference at rounding level shows that the two models differ only by their initialisation.
    """
    from flowkit.layers.autoregressive import _MaskedLinear
    from flowkit.transforms import RationalQuadraticSpline

    if data.context:
        raise SystemExit(f"--nflows-equivalence needs an unconditional set, {data.name} has a context")
    theirs = next(v for v in nflows_variants(data, args) if v.family == "NSF").module.flow.double()
    ours = NSF(data.features, transforms=args.transforms, hidden_features=(args.hidden,) * 2, bins=args.bins,
               bound=args.bound).double()
    spline = RationalQuadraticSpline(args.bins, args.bound)
    shift = math.log(math.expm1(1.0 - spline.min_derivative))
    per = spline.params_per_element
    steps = [t for t in theirs._transform._transforms if hasattr(t, "autoregressive_net")]
    for flips, (step, layer) in enumerate(zip(steps, ours.flow)):
        made = step.autoregressive_net
        pairs = zip((made.initial_layer, made.blocks[0].linear, made.final_layer),
                    [m for m in layer.modules() if isinstance(m, _MaskedLinear)], strict=True)
        for i, (src, dst) in enumerate(pairs):
            weight, bias, mask = src.weight.detach(), src.bias.detach().clone(), src.mask.bool()
            if i == 0 and flips % 2:
                weight, mask = weight.flip(1), mask.flip(1)
            if i == 2:
                weight, bias, mask = (t.unflatten(0, (data.features, per)) for t in (weight, bias, mask))
                if flips % 2:
                    weight, bias, mask = weight.flip(0), bias.flip(0), mask.flip(0)
                bias[..., 2 * args.bins:] -= shift
                weight, bias, mask = (t.flatten(0, 1) for t in (weight, bias, mask))
            if not torch.equal(mask, dst.mask.bool()):
                raise AssertionError(f"layer {flips}, linear {i}: nflows' mask differs from flowkit's")
            with torch.no_grad():
                dst.weight.copy_(weight)
                dst.bias.copy_(bias)
    x, _ = data.sample(1000, torch.Generator().manual_seed(3))
    with torch.no_grad():
        return float((theirs.log_prob(x.double()) - ours.log_prob(x.double())).abs().max())


# ---------------------------------------------------------------------------------------------


def _paired_ratio(times: dict[str, list[float]], name: str, reference: str) -> float:
    """Median over rounds of ``name``'s step time over ``reference``'s in the same round."""
    return statistics.median(t / r for t, r in zip(times[name], times[reference]))


def train_side_by_side(data: DataSet, variants: list[Variant], args: argparse.Namespace, device: torch.device) -> list[dict]:
    optimizers = {}
    for v in variants:
        v.module.to(device).train()
        optimizers[v.name] = torch.optim.Adam(v.module.parameters(), lr=args.lr)
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    order = list(variants)
    shuffle = random.Random(0)
    batches = torch.Generator().manual_seed(1 + 1000 * args.seed)
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
        row = {"data": data.name, "variant": v.name, "library": v.library, "family": v.family,
               "compiled": v.compiled or "eager", "test_nll": nll, "median_ms": stats.median * 1e3,
               "iqr_ms": stats.iqr * 1e3, "vs_flowkit": _paired_ratio(times, v.name, f"flowkit {v.family}"),
               "steps": args.steps}
        if v.compiled and f"flowkit {v.family} compiled" in times:
            row["vs_flowkit_compiled"] = _paired_ratio(times, v.name, f"flowkit {v.family} compiled")
        rows.append(row)
    return rows


def over_seeds(per_seed: list[list[dict]]) -> list[dict]:
    """One row per variant from runs with different seeds: NLL mean and spread, median of the time statistics.

    Two-dimensional densities trained for a few thousand steps land in different local optima from
    one initialisation to the next (seen here: 0.3 nats between seeds on eight_gaussians), far more
    than the 0.01-nat target, so single-seed NLLs cannot be compared.
    """
    out = []
    for rows in zip(*per_seed):
        nlls = [r["test_nll"] for r in rows]
        row = dict(rows[0])
        row.update(test_nll=statistics.fmean(nlls), nll_sd=statistics.stdev(nlls) if len(nlls) > 1 else 0.0,
                   nll_seeds=nlls, seeds=len(nlls))
        for key in ("median_ms", "iqr_ms", "vs_flowkit", "vs_flowkit_compiled"):
            if key in rows[0]:
                row[key] = statistics.median(r[key] for r in rows)
        out.append(row)
    return out


def targets(rows: list[dict]) -> list[dict]:
    """Per data set and family, flowkit against the best of the other libraries (the issue's targets).

    ``nll_gap``: flowkit's mean test NLL minus the lowest mean of zuko's and nflows' (target <= 0.01
    nats), with ``gap_se``, its standard error over the seeds.
    ``eager_speed``: the smallest of their step time / flowkit's, eager (target >= 1.0).
    ``compiled_speed``: likewise, each compiled (target > 1.0; theirs with graph breaks if they break).
    """
    out = []
    for data in dict.fromkeys(r["data"] for r in rows):
        for family in ("NSF", "MAF", "RealNVP"):
            group = [r for r in rows if r["data"] == data and r["family"] == family]
            mine = [r for r in group if r["library"] == "flowkit" and r["compiled"] == "eager"]
            theirs = [r for r in group if r["library"] != "flowkit" and r["compiled"] == "eager"]
            if not mine or not theirs:
                continue
            compiled = [r["vs_flowkit_compiled"] for r in group if r["library"] != "flowkit" and "vs_flowkit_compiled" in r]
            best = min(theirs, key=lambda r: r["test_nll"])
            seeds = mine[0].get("seeds", 1)
            # Standard error of the difference of two seed means (None from a single seed).
            gap_se = math.hypot(mine[0]["nll_sd"], best["nll_sd"]) / math.sqrt(seeds) if seeds > 1 else None
            out.append({"data": data, "family": family, "flowkit_nll": mine[0]["test_nll"], "best_other_nll": best["test_nll"],
                        "best_other": best["library"], "nll_gap": mine[0]["test_nll"] - best["test_nll"], "gap_se": gap_se,
                        "eager_speed": min(r["vs_flowkit"] for r in theirs),
                        "compiled_speed": min(compiled) if compiled else None})
    return out


COLUMNS = [("data", "data", ""), ("variant", "model", ""), ("compiled", "compile", ""),
           ("test_nll", "test NLL (nats, mean)", ".4f"), ("nll_sd", "sd over seeds", ".4f"), ("median_ms", "step ms (median)", ".2f"), ("iqr_ms", "IQR ms", ".2f"),
           ("vs_flowkit", "step time / flowkit eager", ".2f"),
           ("vs_flowkit_compiled", "step time / flowkit compiled", ".2f")]
TARGET_COLUMNS = [("data", "data", ""), ("family", "family", ""), ("flowkit_nll", "flowkit NLL", ".4f"),
                  ("best_other_nll", "best other NLL", ".4f"), ("best_other", "by", ""),
                  ("nll_gap", "gap (target <= 0.01)", "+.4f"), ("gap_se", "its standard error", ".4f"), ("eager_speed", "their / flowkit time, eager (target >= 1)", ".2f"),
                  ("compiled_speed", "their / flowkit time, compiled (target > 1)", ".2f")]


def _versions() -> dict[str, str | None]:
    versions = {}
    for package in ("zuko", "nflows"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two 2-D sets and 300 steps (CPU, a few minutes)")
    parser.add_argument("--data", nargs="*", choices=sorted(DATASETS), help="data sets (default: all; quick: two)")
    parser.add_argument("--compile", action="store_true",
                        help="add a torch.compile(fullgraph=True) copy of every model (fullgraph=False where it breaks)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 5000, quick 300)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed first steps")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--transforms", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--bins", type=int, default=8)
    parser.add_argument("--bound", type=float, default=5.0, help="spline interval [-bound, bound] (zuko's is 5)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="independent runs (initial weights and batches) averaged per model (default 3, quick 1)")
    parser.add_argument("--test-size", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="folder for the result files")
    parser.add_argument("--nflows-equivalence", action="store_true",
                        help="only check that flowkit's NSF given nflows' initial weights computes nflows' log p")
    args = parser.parse_args(argv)
    if args.nflows_equivalence:
        args.seed = 0
        for name in args.data or ["eight_gaussians", "warped10"]:
            difference = nflows_nsf_equivalence(DATASETS[name], args)
            print(f"{name}: max |log p(nflows NSF) - log p(flowkit NSF, nflows' weights)| = {difference:.2e} (float64)")
        return
    args.steps = args.steps or (300 if args.quick else 5000)
    args.seeds = args.seeds or (1 if args.quick else 3)
    if args.seeds < 1 or args.steps < 1:
        parser.error(f"--seeds and --steps must be positive, got {args.seeds} and {args.steps}")
    names = args.data or (["two_moons", "cond_two_moons"] if args.quick else sorted(DATASETS))
    torch.set_num_threads(args.threads)
    # One compiled log_prob per model shares a code object (FlowModel.log_prob, the wrappers' forward):
    # more models than the default limit of 8 would silently fall back to eager.
    torch._dynamo.config.recompile_limit = 64
    device = torch.device(args.device)
    rows = []
    for name in names:
        data = DATASETS[name]
        per_seed = []
        for seed in range(args.seeds):
            args.seed = seed
            torch._dynamo.reset()
            variants = flowkit_variants(data, args) + zuko_variants(data, args) + nflows_variants(data, args)
            per_seed.append(train_side_by_side(data, variants, args, device))
            print(f"  {name}, seed {seed}: " + ", ".join(f"{r['variant']} {r['test_nll']:.3f}" for r in per_seed[-1]),
                  file=sys.stderr)
        rows += over_seeds(per_seed)
    env = {**environment(device), **_versions()}
    settings = {key: value for key, value in vars(args).items() if key not in ("output", "seed")}
    command = "python benchmarks/density.py " + " ".join(sys.argv[1:] if argv is None else argv)
    goals = targets(rows)
    markdown = "\n".join([
        f"# density benchmark on {env['device']}",
        "",
        f"torch {env['torch']}, zuko {env['zuko']}, nflows {env['nflows']}, {env['threads']} threads, "
        f"{env['date_utc']} UTC, commit {env['commit']}; `{command}`.",
        "",
        f"{args.steps} steps of batch {args.batch} (Adam, lr {args.lr}; the same batches and initial seed for every model), "
        f"{args.seeds} seed(s): NLL is the mean over seeds (with its standard deviation), times the median; "
        f"{args.transforms} transforms, MLPs/MADEs with hidden ({args.hidden}, {args.hidden}), {args.bins} bins on "
        f"[-{args.bound:g}, {args.bound:g}] with linear tails; test NLL on {args.test_size} held-out samples; "
        f"the first {args.warmup} steps untimed. Step time ratios are medians over rounds of per-round ratios."
        + (" CPU run: read the time ratios only." if device.type == "cpu" else ""),
        "",
        markdown_table(rows, COLUMNS),
        "",
        "## Targets: flowkit against the best of zuko and nflows",
        "",
        markdown_table(goals, TARGET_COLUMNS),
    ])
    stem = f"density_{device_tag(device)}" + ("_quick" if args.quick else "")
    payload = {"benchmark": "density", "command": command, "environment": env, "settings": settings, "rows": rows,
               "targets": goals}
    paths = write_results(stem, payload, markdown, args.output)
    print(markdown)
    print("\nwrote " + ", ".join(str(p) for p in paths))

if __name__ == "__main__":
    main()
