"""Draw the shipped LLFlow's enhancements of real low-light photographs at three exposures.

Run from the repository root (under a minute on a CPU; it needs the DICM and LIME photographs in
``../shared/data``, or pass ``--data``)::

    python docs/figures/exposure.py [--data ../shared/data] [--out docs/_static/figures]

It writes ``exposure.png``: one row per photograph, the low-light input, then
``LLFlow.enhance(low, exposure=s)`` for ``s`` = -1, ``None`` (the model's own exposure) and +1
stop. The model runs once per photograph; the exposure curve
(:func:`flowkit.models.llflow.exposure.adjust_exposure`) is applied to its output, so the three
panels differ only by brightness, with hue and highlights kept.
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
from flowkit.models.llflow.exposure import adjust_exposure

PHOTOS = ("real_lowlight/DICM/test/low/20.jpg", "real_lowlight/LIME/test/low/3.bmp",
          "real_lowlight/DICM/test/low/01.jpg")
STOPS = (-1.0, None, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("docs/_static/figures"))
    args = parser.parse_args()
    missing = [name for name in PHOTOS if not (args.data / name).is_file()]
    if missing:
        parser.error(f"--data {args.data}: missing {', '.join(missing)}")
    torch.set_num_threads(2)
    model = LLFlow.from_pretrained()
    fig, axes = plt.subplots(len(PHOTOS), 1 + len(STOPS), figsize=(3.2 * (1 + len(STOPS)), 2.5 * len(PHOTOS)))
    for row, name in zip(axes, PHOTOS):
        low = read_image(args.data / name)[None]
        with torch.no_grad():
            own = model.enhance(low)
        panels = [("input", low)] + [
            ("model's exposure" if stops is None else f"exposure {stops:+g} stop", own if stops is None
             else adjust_exposure(own, stops)) for stops in STOPS
        ]
        for ax, (title, image) in zip(row, panels):
            ax.imshow(image[0].permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    save_png(fig, args.out / "exposure.png", dpi=110)


if __name__ == "__main__":
    main()
