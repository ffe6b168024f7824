"""Fit the low-light synthesizer to the real LOL pairs and draw real against synthetic statistics.

Run from the repository root with the research data in ../shared/data (about two minutes on two
cores)::

    python docs/figures/calibration.py [--data ../shared/data] [--out docs/_static/figures]

It prints each pair's fit and the ranges :meth:`flowkit.models.llflow.data.LowLightSynthesizer.lol` ships
(``LOL_FIT`` in ``flowkit/models/llflow/data/synthetic.py``), and writes ``calibration.png``: image means,
colour casts and noise standard deviation against intensity, for the real LOL low-light images
and for synthetic ones (the same normal-light images darkened with each pair's own fit, and
BSDS500 photographs darkened by ``LowLightSynthesizer.lol()`` as in training).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from _output import save_png

from flowkit.models.llflow.data import LowLightSynthesizer, darken, read_image
from flowkit.models.llflow.data.calibration import calibrate, low_light_statistics
from flowkit.models.llflow.data.synthetic import LOL_FIT

PAIRS = [("eval15", "778"), ("our485_subset", "697"), ("our485_subset", "717"), ("our485_subset", "776")]
CHANNELS = ("red", "green", "blue")
COLOURS = ("tab:red", "tab:green", "tab:blue")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("docs/_static/figures"))
    parser.add_argument("--photos", type=int, default=60, help="BSDS500 photographs to darken")
    args = parser.parse_args(argv)
    lol = args.data / "LOL"
    pairs = [(name, read_image(lol / split / "low" / f"{name}.png"), read_image(lol / split / "high" / f"{name}.png"))
             for split, name in PAIRS]

    calibration = calibrate(pairs)
    print("per-pair fits (low = scale * gain_c * high^gamma + Poisson-Gaussian noise):")
    print("| pair | gamma | scale | red gain | blue gain | shot a | read sigma R, G, B |")
    print("|---|---|---|---|---|---|---|")
    for fit in calibration.fits:
        reads = ", ".join(f"{r:.4f}" for r in fit.read_noise)
        print(f"| {fit.name} | {fit.tone.gamma:.2f} | {fit.tone.scale:.3f} | {fit.tone.gains[0]:.3f} | "
              f"{fit.tone.gains[2]:.3f} | {fit.shot_noise:.0e} | {reads} |")
    print("\nfitted ranges (widened 15%) vs the shipped LOL_FIT:")
    for key, (low, high) in calibration.ranges.items():
        print(f"  {key:11s} fitted ({low:.3g}, {high:.3g})   shipped {LOL_FIT[key]}")

    real = [low_light_statistics(low, high) for _, low, high in pairs]
    refit = []
    for (_, _low, high), fit in zip(pairs, calibration.fits):
        generator = torch.Generator().manual_seed(0)
        refit.append(low_light_statistics(darken(high, fit.params, generator=generator), high))
    synthesizer = LowLightSynthesizer.lol()
    photos = sorted((args.data / "photos" / "BSDS500").rglob("*.jpg"))[: args.photos]
    generator = torch.Generator().manual_seed(1)
    synthetic = []
    for path in photos:
        high = read_image(path)
        low, _ = synthesizer(high, generator=generator)
        synthetic.append(low_light_statistics(low, high))
    only_low = sorted((lol / "eval15_low_only" / "low").glob("*.png"))
    real_means = [float(read_image(p).mean()) for p in only_low] + [
        float(read_image(lol / "our485_subset" / "low" / f"{n}.png").mean()) for _, n in PAIRS[1:]]

    figure, axes = plt.subplots(1, 4, figsize=(17, 4.0), layout="constrained")
    ax = axes[0]
    bins = torch.linspace(0, 0.15, 31).tolist()
    ax.hist(real_means, bins=bins, alpha=0.6, density=True, label=f"real LOL lows ({len(real_means)})")
    ax.hist([float(sum(s.mean) / 3) for s in synthetic], bins=bins, alpha=0.6, density=True,
            label=f"synthetic, BSDS500 ({len(synthetic)})")
    ax.set(xlabel="image mean (fraction of full scale)", ylabel="density", title="Brightness")
    ax.legend(fontsize=8)

    ax = axes[1]
    ax.scatter([s.color_ratios[0] for s in synthetic], [s.color_ratios[1] for s in synthetic], s=12,
               alpha=0.5, label="synthetic, BSDS500")
    ax.scatter([s.color_ratios[0] for s in real], [s.color_ratios[1] for s in real], s=50, marker="*",
               color="black", label="real LOL pairs")
    ax.axhline(1, color="grey", lw=0.5)
    ax.axvline(1, color="grey", lw=0.5)
    ax.set(xlabel="red cast (R/G of low over R/G of normal)", ylabel="blue cast (B/G ratio)",
           title="Colour cast")
    ax.legend(fontsize=8)

    for ax, sources, title in ((axes[2], (real, refit), "Noise: real vs per-pair fit"),
                               (axes[3], (real, synthetic), "Noise: real vs training draws")):
        for channel, colour in enumerate(COLOURS):
            for index, (stats, style) in enumerate(zip(sources, ("-", "--"))):
                xs, ys = _pooled(stats, channel)
                label = (f"{CHANNELS[channel]}, " + ("real" if index == 0 else "synthetic"))
                ax.plot(xs, ys, style, color=colour, marker="o" if index == 0 else None, ms=3, label=label)
        ax.set(xlabel="local mean intensity", ylabel="noise std (fraction of full scale)", title=title,
               xscale="log", xlim=(0.003, 0.25), ylim=(0, 0.014))
        ax.legend(fontsize=7, ncol=2)
    print()
    save_png(figure, args.out / "calibration.png", dpi=110)
    return 0


def _pooled(stats, channel: int) -> tuple[list[float], list[float]]:
    """Count-weighted pooling of several images' noise profiles, per intensity bin."""
    bins = stats[0].noise.std.shape[1]
    xs, ys = [], []
    for b in range(bins):
        weight = total_x = total_var = 0.0
        for s in stats:
            n = int(s.noise.count[channel, b])
            if n and torch.isfinite(s.noise.std[channel, b]):
                weight += n
                total_x += n * float(s.noise.intensity[channel, b])
                total_var += n * float(s.noise.std[channel, b]) ** 2
        if weight:
            xs.append(total_x / weight)
            ys.append((total_var / weight) ** 0.5)
    return xs, ys


if __name__ == "__main__":
    sys.exit(main())
