"""Draw LLFlow's architecture for the LLFlow page: the conditional encoder, the flow and the prior.

Run from the repository root (a second)::

    python docs/figures/llflow_architecture.py [--out docs/_static/figures]

It writes ``llflow_architecture.png``. The sizes in the boxes are those of ``LLFlowConfig()``'s
defaults (the reference's LOL network), taken from the config and the model rather than typed in,
so the drawing follows the code: the channel counts of each flow level come from a real
``LLFlow``'s flow, the conditioning width from its encoder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from _output import save_png
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from flowkit.models import LLFlow, LLFlowConfig

ENCODER, FLOW, PRIOR, DATA = "#dbe9f6", "#fde6cf", "#e3f1dc", "#eeeeee"


def box(ax, x, y, w, h, text, color, *, size=8.5, weight="normal"):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=color, edgecolor="#555555", linewidth=0.8))
    ax.text(x, y, text, ha="center", va="center", fontsize=size, weight=weight, linespacing=1.25)


def arrow(ax, start, end, *, color="#333333", style="-|>", dashed=False, rad=0.0, label=None, label_at=0.5):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=9, color=color, linewidth=0.9,
                                 linestyle="--" if dashed else "-", connectionstyle=f"arc3,rad={rad}",
                                 shrinkA=2, shrinkB=2))
    if label:
        x = start[0] + (end[0] - start[0]) * label_at
        y = start[1] + (end[1] - start[1]) * label_at
        ax.text(x + 0.06, y, label, fontsize=7.5, color=color, va="center", style="italic")


def draw(config: LLFlowConfig) -> plt.Figure:
    model = LLFlow(config)
    cond = model.encoder.cond_channels
    nf, blocks, stack = config.encoder_channels, config.encoder_blocks, config.stack_blocks
    channels = [3 * 4 ** (level + 1) for level in range(3)]
    assert [lvl[0].factor for lvl in model.flow.levels] == [2, 2, 2]  # the drawing assumes 3 squeezes
    fig, ax = plt.subplots(figsize=(12, 6.4))
    ax.set_xlim(0, 12)
    ax.set_ylim(0, 6.4)
    ax.axis("off")

    # Encoder column.
    ax.text(1.9, 6.15, "conditional encoder", ha="center", fontsize=10, weight="bold", color="#1f4e79")
    box(ax, 1.9, 5.6, 3.2, 0.55, "low-light image  x  (3, H, W)", DATA, weight="bold")
    box(ax, 1.9, 4.85, 3.2, 0.6, "[log(x + 1e-3), histeq(x)]   6 ch\n+ colour map x / Σx, noise map   → 12 ch", ENCODER,
        size=7.8)
    box(ax, 1.9, 4.05, 3.2, 0.55, f"stem: 2 convs, max-pool  → {nf} ch, H/2", ENCODER)
    box(ax, 1.9, 3.3, 3.2, 0.6, f"{blocks} RRDBs (trunk)\noutputs of blocks {list(stack)} stacked", ENCODER)
    box(ax, 1.9, 2.5, 3.2, 0.55, f"down2 = stem + conv(trunk)   {nf} ch, H/2", ENCODER)
    box(ax, 1.9, 1.75, 3.2, 0.55, "down4 = lrelu(conv(½ down2))   H/4", ENCODER)
    box(ax, 1.9, 1.0, 3.2, 0.55, "down8 = conv(½ down4)   H/8", ENCODER)
    box(ax, 1.9, 0.3, 3.2, 0.45, "colour map: sigmoid(conv(2× down2))", ENCODER)
    for y0, y1 in ((5.32, 5.15), (4.55, 4.33), (3.78, 3.6), (3.0, 2.78), (2.22, 2.03), (1.47, 1.28)):
        arrow(ax, (1.9, y0), (1.9, y1))
    ax.plot([0.28, 0.1, 0.1], [2.5, 2.5, 0.3], color="#333333", linewidth=0.9)
    arrow(ax, (0.1, 0.3), (0.3, 0.3))

    # Flow column (data -> latent is flowkit's forward direction).
    ax.text(6.7, 6.15, "conditional flow  (forward: image → latent)", ha="center", fontsize=10, weight="bold",
            color="#8a4b08")
    box(ax, 6.7, 5.6, 3.9, 0.55, "normal-light image  y  (3, H, W)   [training]", DATA, weight="bold")
    ys = (4.55, 2.75, 1.05)
    for level, (y, c) in enumerate(zip(ys, channels)):
        size = ("H/2", "H/4", "H/8")[level]
        text = (f"level {level + 1}:  squeeze ×2  → {c} ch, {size}\n"
                f"{config.transition_steps} × [ActNorm → 1x1 conv]\n"
                f"{config.steps_per_level} × [ActNorm → 1x1 conv → injector → coupling]")
        box(ax, 6.7, y, 3.9, 1.05, text, FLOW, size=8)
    arrow(ax, (6.7, 5.32), (6.7, 5.08))
    arrow(ax, (6.7, ys[0] - 0.53), (6.7, ys[1] + 0.53))
    arrow(ax, (6.7, ys[1] - 0.53), (6.7, ys[2] + 0.53))
    # Conditioning: each level's encoder feature, with the stacked trunk outputs, feeds its couplings.
    for src, y in zip((2.5, 1.75, 1.0), ys):  # down2, down4, down8
        arrow(ax, (3.5, src), (4.75, y - 0.2), color="#1f4e79", rad=-0.15)
    ax.text(3.56, 5.05, f"conditioning\n(level feature\n+ stacked RRDB\noutputs, {cond} ch)",
            fontsize=7, color="#1f4e79", style="italic", va="center")

    # Prior column.
    ax.text(10.55, 6.15, "prior and enhancement", ha="center", fontsize=10, weight="bold", color="#38761d")
    box(ax, 10.55, 1.05, 2.5, 0.75, f"latent  z  ({channels[-1]}, H/8, W/8)", PRIOR, weight="bold")
    arrow(ax, (8.65, 1.05), (9.3, 1.05))
    box(ax, 10.55, 2.6, 2.5, 1.15, "prior  N(μ, I)\nμ = squeeze×8(colour map)\n(encoder's, or the normal-light\n"
        "image's in 20% of training batches)", PRIOR, size=7.6)
    # The predicted colour map becomes the prior mean: routed below the flow and up to the prior.
    ax.plot([3.5, 9.0, 9.0], [0.3, 0.3, 2.3], color="#1f4e79", linewidth=0.9, linestyle="--")
    arrow(ax, (9.0, 2.3), (9.3, 2.3), color="#1f4e79")
    arrow(ax, (10.55, 1.42), (10.55, 2.02), style="<|-|>")
    box(ax, 10.55, 4.6, 2.5, 1.3, "training: minimise\n−log p(y | x) = −log N(z; μ, I)\n− log|det ∂z/∂y|\n"
        "(in bits per pixel)\n\nenhance: z = μ (T = 0)\nor μ + T·ε, then inverse flow", PRIOR, size=7.6)
    arrow(ax, (10.55, 3.18), (10.55, 3.95))
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/_static/figures"))
    args = parser.parse_args()
    fig = draw(LLFlowConfig())
    save_png(fig, args.out / "llflow_architecture.png", dpi=130, bbox_inches="tight")


if __name__ == "__main__":
    main()
