"""Draw v3 and v4 side by side on real photographs that are only a little dark.

Run from the repository root (about a minute on a CPU; it needs the DICM photographs in
``../shared/data``, or pass ``--data``)::

    python docs/figures/exposure_comparison.py [--data ../shared/data] [--out docs/_static/figures]

It writes ``exposure_comparison.png``: one row per photograph, the input, then its enhancement by
``llflow-synthetic-v3`` and by ``llflow-synthetic-v4``, each as it enhances by default. v3 was
trained on LOL-like darkness only and lifts every input to one brightness; v4 learned from a mild
share of its data that a brighter input is a brighter scene (the model card's *v4*). The last row
is one of the brightest DICM photographs, where v4's white sky comes out in faint patches of
grey-green and cyan and v3's in plain white.
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

# Input means 0.44, 0.46, 0.35 and 0.76.
PHOTOS = ("real_lowlight/DICM/test/low/05.jpg", "real_lowlight/DICM/test/low/10.jpg",
          "real_lowlight/DICM/test/low/31.jpg", "real_lowlight/DICM/test/low/66.jpg")
MODELS = ("llflow-synthetic-v3", "llflow-synthetic-v4")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("docs/_static/figures"))
    args = parser.parse_args()
    missing = [name for name in PHOTOS if not (args.data / name).is_file()]
    if missing:
        parser.error(f"--data {args.data}: missing {', '.join(missing)}")
    torch.set_num_threads(2)
    models = {name: LLFlow.from_pretrained(name) for name in MODELS}
    fig, axes = plt.subplots(len(PHOTOS), 1 + len(MODELS), figsize=(3.4 * (1 + len(MODELS)), 2.4 * len(PHOTOS)))
    for row, name in zip(axes, PHOTOS):
        low = read_image(args.data / name)[None]
        panels = [(f"input ({Path(name).stem}.jpg, mean {float(low.mean()):.2f})", low)]
        with torch.no_grad():
            panels += [(model_name.removeprefix("llflow-synthetic-"), model.enhance(low))
                       for model_name, model in models.items()]
        for ax, (title, image) in zip(row, panels):
            ax.imshow(image[0].permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_title(title if image is low else f"{title} (mean {float(image.mean()):.2f})", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    save_png(fig, args.out / "exposure_comparison.png", dpi=110)


if __name__ == "__main__":
    main()
