"""Draw why flows dequantise discrete data, for the concepts page.

Run from the repository root (a few seconds)::

    python docs/figures/dequantization.py [--out docs/_static/figures]

It writes ``dequantization.png``. Left: 8-level data (a 3-bit pixel) as a continuous density
sees it, spikes, which a density can make arbitrarily tall: its likelihood has no maximum.
Right: the same data with uniform noise ``u / 8`` added (``FlowModel(dequantize=8)``). No density
on ``[0, 1)`` can exceed the expected log-likelihood of the one constant at ``8 P(k)`` on bin
``k``, whose log-density minus ``log 8`` is exactly ``log P(k)``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from _output import save_png

LEVELS = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/_static/figures"))
    out = parser.parse_args().out
    gen = torch.Generator().manual_seed(0)
    # A 3-bit "pixel": a discretised bump, values k / 8 for k = 0..7.
    logits = -0.5 * ((torch.arange(LEVELS, dtype=torch.float64) - 4.6) / 1.6) ** 2
    probs = torch.softmax(logits, 0)
    k = torch.multinomial(probs, 20000, replacement=True, generator=gen).double()
    values = k / LEVELS
    dequantized = values + torch.rand(values.shape, generator=gen, dtype=torch.float64) / LEVELS

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharex=True)
    ax = axes[0]
    ax.stem(torch.arange(LEVELS) / LEVELS, probs, basefmt=" ", linefmt="C0-", markerfmt="C0o")
    width = 0.004  # a density made of ever narrower bumps at the data: its likelihood grows without bound
    grid = torch.linspace(0, 1, 4001, dtype=torch.float64)
    bumps = sum(p * torch.exp(-0.5 * ((grid - i / LEVELS) / width) ** 2) / (width * (2 * torch.pi) ** 0.5)
                for i, p in enumerate(probs))
    twin = ax.twinx()
    twin.plot(grid, bumps, color="C3", lw=0.8, alpha=0.8)
    twin.set_ylabel("a density on the data", color="C3", fontsize=8)
    twin.tick_params(axis="y", colors="C3", labelsize=7)
    ax.set(xlabel="pixel value", ylabel="P(k)", title="discrete data: a density can spike (likelihood unbounded)")
    ax.title.set_fontsize(9)

    ax = axes[1]
    ax.hist(dequantized, bins=4 * LEVELS, range=(0, 1), density=True, color="C0", alpha=0.35,
            label=f"data + U[0, 1/{LEVELS})")
    edges = torch.arange(LEVELS + 1) / LEVELS
    ax.stairs(LEVELS * probs, edges, color="C1", lw=1.5, label=f"best density: {LEVELS} P(k) on bin k")
    for edge in edges:
        ax.axvline(edge, color="0.8", lw=0.5, zorder=0)
    ax.set(xlabel="pixel value + noise", ylabel="density",
           title="dequantised: the likelihood is bounded; the best density is flat on each bin")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8, loc="upper left")
    for a in axes:
        a.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, out / "dequantization.png", dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main()
