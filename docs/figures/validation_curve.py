"""The model card's validation curve: PSNR against training step, for the v2 campaign and v1.

Run from the repository root::

    python docs/figures/validation_curve.py --run ~/.cache/flowkit/runs/synthetic_v2

reads the run's ``log.csv`` (the EMA weights' validation every 500 steps, on the first 12 Kodak24
photographs darkened by ``LowLightSynthesizer.lol_wide()`` with seed 21), scores every shipped
model on the same pairs (the run's ``synthetic/val`` folder) with the trainer's own
:func:`~flowkit.models.llflow.train.trainer.validate`, and writes both to ``validation_curve.json``
beside the figure. Without ``--run`` it redraws the figure from that file.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from _output import save_png
from torch.utils.data import Subset

from flowkit.models import LLFlow
from flowkit.models.llflow.data import PairedImageDataset
from flowkit.models.llflow.pretrained import pretrained_names
from flowkit.models.llflow.train.trainer import validate

PAIRS = 12  # the run's val_limit
# The step each shipped model's training stopped at, where its point sits on the step axis.
TRAINED_STEPS = {"llflow-small-synthetic": 1400}


def measure(run: Path) -> dict:
    scores: dict[int, dict[str, float]] = {}
    with open(run / "log.csv", newline="") as file:
        for row in csv.DictReader(file):
            if row["kind"] in ("val/psnr", "val/ssim"):
                scores.setdefault(int(row["step"]), {})[row["kind"][4:]] = float(row["loss"])
    pairs = Subset(PairedImageDataset.from_root(run / "synthetic" / "val"), range(PAIRS))
    shipped = {}
    for name in pretrained_names():
        result = validate(LLFlow.from_pretrained(name), pairs, torch.device("cpu"))
        shipped[name] = {"psnr": result["psnr"], "ssim": result["ssim"], "step": TRAINED_STEPS.get(name)}
        print(f"{name}: PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.3f}")
    return {"pairs": PAIRS, "run": [{"step": s} | v for s, v in sorted(scores.items())], "shipped": shipped}


def draw(data: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=150)
    steps = [row["step"] for row in data["run"]]
    ax.plot(steps, [row["psnr"] for row in data["run"]], "o-", color="tab:blue",
            label="synthetic_v2 campaign (EMA weights)")
    for name, score in data["shipped"].items():
        if score["step"] is not None:
            ax.plot([score["step"]], [score["psnr"]], "s", color="tab:orange", ms=8,
                    label=f"{name} (shipped, trained {score['step']} steps)")
        ax.axhline(score["psnr"], color="tab:orange", lw=0.8, ls="--")
    ax.set_xlabel("training step (8 patches of 128x128 each)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"Validation: {data['pairs']} Kodak24 photographs darkened by lol_wide (seed 21)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_png(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="the campaign's run folder; omit to redraw from the JSON")
    parser.add_argument("--out", type=Path, default=Path("docs/_static/figures"))
    args = parser.parse_args(argv)
    record = args.out / "validation_curve.json"
    if args.run is not None:
        torch.set_num_threads(2)
        data = measure(args.run)
        temporary = record.with_name(f".{record.name}.tmp")
        temporary.write_text(json.dumps(data, indent=2) + "\n")
        temporary.replace(record)
    else:
        data = json.loads(record.read_text())
    draw(data, args.out / "validation_curve.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
