"""Draw a multi-scale conditional flow for the concepts page, with the shapes of a real model.

Run from the repository root (a few seconds)::

    python docs/figures/multiscale.py [--out docs/_static/figures]

It builds the three-level conditional Glow-style flow of the README's quick start, passes a
3x32x32 image through it and records the shape after every ``Squeeze`` and ``Split``; it then
draws each tensor as a block (width: channels, height: resolution) and the factored-out halves
going to their learned priors. The shapes are read from the model, never typed in, so the figure
follows the code. It writes ``multiscale.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from _output import save_png
from matplotlib.patches import FancyArrowPatch, Rectangle

import flowkit
from flowkit.distributions import StandardNormal
from flowkit.layers import ActNorm, AffineCoupling, AffineInjector, FactorOut, InvConv1x1, Split, Squeeze


def readme_flow() -> flowkit.FlowModel:
    """The README's quick-start flow (3 levels, 2 steps each, a split after levels 1 and 2)."""
    def step(c: int, k: int = 3) -> flowkit.Sequential:
        return flowkit.Sequential(ActNorm(c), InvConv1x1(c), AffineInjector(c, k), AffineCoupling(c, cond_channels=k))

    def level(c: int, coarser: flowkit.Flow | None = None) -> flowkit.Flow:
        c *= 4
        out = [Split(c, cond_channels=3), FactorOut(coarser, c // 2)] if coarser is not None else []
        body = flowkit.Sequential(Squeeze(), step(c), step(c), *out, flowkit.Inverse(Squeeze()))
        return flowkit.WithCond(body, torch.nn.AvgPool2d(2))

    return flowkit.FlowModel(level(3, level(6, level(12))), StandardNormal((3, 32, 32)))


def traced_shapes(model: flowkit.FlowModel, x: torch.Tensor, cond: torch.Tensor) -> list[tuple[str, tuple]]:
    """(event, C x H x W) in the order the forward pass meets them."""
    events: list[tuple[str, tuple]] = [("input", tuple(x.shape[1:]))]
    hooks = []
    for module in model.flow.modules():
        if isinstance(module, Squeeze):
            hooks.append(module.register_forward_hook(
                lambda m, i, o: events.append(("squeeze", tuple(o[0].shape[1:])))))
        if isinstance(module, Split):
            def record(m, i, o):
                events.append(("split", (m.keep, *o[0].shape[2:]), (m.channels - m.keep, *o[0].shape[2:])))
            hooks.append(module.register_forward_hook(record))
    with torch.no_grad():
        model.eval().log_prob(x, cond)
    for hook in hooks:
        hook.remove()
    return events


def block(ax, x: float, shape: tuple, color: str, label: str, scale: float) -> tuple[float, float]:
    """A C x H x W tensor as a rectangle, width ~ channels and height ~ H, centred on y = 0."""
    c, h, _ = shape
    width, height = 0.05 * c, scale * h
    ax.add_patch(Rectangle((x, -height / 2), width, height, facecolor=color, edgecolor="k", lw=0.8))
    ax.text(x + width / 2, -height / 2 - 0.35, label, ha="center", va="top", fontsize=8)
    return x + width, height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/_static/figures"))
    out = parser.parse_args().out
    torch.manual_seed(0)
    model = readme_flow()
    events = traced_shapes(model, torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))

    fig, ax = plt.subplots(figsize=(9, 3.9))
    scale, x, level = 0.11, 0.0, 0
    fmt = "{}x{}x{}".format
    for event in events:
        kind, shape = event[0], event[1]
        if kind == "input":
            x, _ = block(ax, x, shape, "0.85", "image\n" + fmt(*shape), scale)
        elif kind == "squeeze":
            level += 1
            ax.add_patch(FancyArrowPatch((x + 0.1, 0), (x + 0.9, 0), arrowstyle="-|>", mutation_scale=12))
            ax.text(x + 0.5, 0.25, f"level {level}:\nsqueeze,\n2 steps", ha="center", va="bottom", fontsize=8)
            x, _ = block(ax, x + 1.0, shape, "C0", fmt(*shape), scale)
        elif kind == "split":
            kept, out_shape = shape, event[2]
            ax.add_patch(FancyArrowPatch((x + 0.1, 0), (x + 0.7, 0), arrowstyle="-|>", mutation_scale=12))
            ax.text(x + 0.4, 0.25, "split", ha="center", va="bottom", fontsize=8)
            start = x + 0.8
            x, height = block(ax, start, kept, "C0", "kept\n" + fmt(*kept), scale)
            # The factored-out half, drawn above, goes to a prior conditioned on the kept half.
            width = 0.05 * out_shape[0]
            top = 1.9
            ax.add_patch(Rectangle((start, top), width, scale * out_shape[1], facecolor="C1", edgecolor="k", lw=0.8))
            ax.add_patch(FancyArrowPatch((start + width / 2, height / 2 + 0.05), (start + width / 2, top - 0.05),
                                         arrowstyle="-|>", mutation_scale=10, color="C1"))
            ax.text(start + width + 0.12, top + scale * out_shape[1] / 2,
                    f"{fmt(*out_shape)} out\n" r"$\sim \mathcal{N}(\mu, \sigma^2)$," "\n"
                    r"$\mu, \sigma$ from kept, cond", ha="left", va="center", fontsize=8, color="C1")
    ax.add_patch(FancyArrowPatch((x + 0.1, 0), (x + 0.7, 0), arrowstyle="-|>", mutation_scale=12))
    final = events[-1][1]
    ax.text(x + 0.8, 0, f"z {fmt(*final)}\n" r"$\sim \mathcal{N}(0, I)$", ha="left", va="center", fontsize=9)
    ax.set_xlim(-0.2, x + 2.0)
    ax.set_ylim(-2.6, 3.9)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("forward (data to latent): each level trades resolution for channels,\n"
                 "and each split hands half of them to a learned prior", fontsize=9)
    fig.tight_layout()
    save_png(fig, out / "multiscale.png", dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main()
