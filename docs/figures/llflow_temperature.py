"""Draw the shipped LLFlow's enhancements of one LOL image at several temperatures.

Run from the repository root (about ten seconds on a CPU; it needs the LOL image in
``../shared/data``, or pass ``--image``)::

    python docs/figures/llflow_temperature.py [--image PATH] [--out docs/_static/figures]

It writes ``llflow_temperature.png``: the low-light input, then ``LLFlow.enhance`` at temperature
0 (the prior mean, deterministic) and at two higher temperatures, each decoding
``z = mean + T * eps`` with the same ``eps``, so that the panels differ only by how far from the
mean the latent is drawn.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from _output import save_png

from flowkit.models import LLFlow
from flowkit.models.llflow.data import read_image

DEFAULT_IMAGE = Path("../shared/data/LOL/eval15/low/778.png")
TEMPERATURES = (0.0, 0.4, 0.8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--out", type=Path, default=Path("docs/_static/figures"))
    args = parser.parse_args()
    if not args.image.is_file():
        parser.error(f"--image {args.image}: no such file")
    model = LLFlow.from_pretrained()
    low = read_image(args.image)[None]
    panels = [("low-light input", low)]
    for temperature in TEMPERATURES:
        generator = torch.Generator().manual_seed(0)  # the same eps for every temperature
        out = model.enhance(low, temperature=temperature, generator=generator)
        panels.append((f"T = {temperature:g}" + (" (prior mean)" if temperature == 0 else ""), out))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.5))
    for ax, (title, image) in zip(axes, panels):
        ax.imshow(image[0].permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    save_png(fig, args.out / "llflow_temperature.png", dpi=110)


if __name__ == "__main__":
    main()
