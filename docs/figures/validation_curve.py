"""The model card's validation curve: PSNR against training step, for the v2 runs and v1.

Run from the repository root::

    python docs/figures/validation_curve.py \
        --run "campaign=$HOME/.cache/flowkit/runs/synthetic_v2" \
        --run "campaign, dequantised=$HOME/.cache/flowkit/runs/synthetic_v2_dq" \
        --fork "from v1, lr 2.5e-4=$HOME/.cache/flowkit/ft_v1b" ...

reads each run's ``log.csv`` (its EMA weights' validation, on the first 12 Kodak24 photographs
darkened by ``LowLightSynthesizer.lol_wide()`` with seed 21; every run must have validated on the
same pairs), scores every shipped model on those pairs (the first run's ``synthetic/val`` folder)
with the trainer's own :func:`~flowkit.models.llflow.train.trainer.validate`, and writes it all to
``validation_curve.json`` beside the figure. A ``--fork`` started from v1's weights (``--init``):
its steps are drawn after v1's 1400. Without ``--run`` it redraws the figure from that file.
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
V1 = "llflow-small-synthetic"  # the weights the forks start from


def _validations(run: Path) -> list[dict[str, float]]:
    scores: dict[int, dict[str, float]] = {}
    with open(run / "log.csv", newline="") as file:
        for row in csv.DictReader(file):
            if row["kind"] in ("val/psnr", "val/ssim"):
                scores.setdefault(int(row["step"]), {})[row["kind"][4:]] = float(row["loss"])
    return [{"step": s} | v for s, v in sorted(scores.items())]


def _labelled(option: str) -> tuple[str, Path]:
    label, _, folder = option.rpartition("=")
    if not label:
        raise argparse.ArgumentTypeError(f"expected LABEL=FOLDER, got {option!r}")
    return label, Path(folder).expanduser()


def measure(runs: list[tuple[str, Path]], forks: list[tuple[str, Path]]) -> dict:
    pairs = Subset(PairedImageDataset.from_root(runs[0][1] / "synthetic" / "val"), range(PAIRS))
    shipped = {}
    for name in pretrained_names():
        result = validate(LLFlow.from_pretrained(name), pairs, torch.device("cpu"))
        shipped[name] = {"psnr": result["psnr"], "ssim": result["ssim"], "step": TRAINED_STEPS.get(name)}
        print(f"{name}: PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.3f}")
    return {"pairs": PAIRS, "runs": {label: _validations(folder) for label, folder in runs},
            "forks": {label: _validations(folder) for label, folder in forks}, "shipped": shipped}


def draw(data: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7.2, 4.0), dpi=150)
    for (label, rows), colour in zip(data["runs"].items(), ("tab:blue", "tab:green", "tab:purple")):
        ax.plot([r["step"] for r in rows], [r["psnr"] for r in rows], "o-", color=colour, label=f"{label} (EMA)")
    v1 = data["shipped"][V1]
    for (label, rows), colour in zip(data["forks"].items(), ("tab:red", "tab:brown", "tab:pink", "tab:gray", "tab:olive")):
        ax.plot([v1["step"]] + [v1["step"] + r["step"] for r in rows], [v1["psnr"]] + [r["psnr"] for r in rows],
                ".--", color=colour, lw=1, label=label)
    for name, score in data["shipped"].items():
        if score["step"] is not None:
            ax.plot([score["step"]], [score["psnr"]], "s", color="tab:orange", ms=8,
                    label=f"{name} (shipped, trained {score['step']} steps)")
        ax.axhline(score["psnr"], color="tab:orange", lw=0.8, ls="--")
    ax.set_xlabel("training step (8 patches of 128x128 each)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"Validation: {data['pairs']} Kodak24 photographs darkened by lol_wide (seed 21)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_png(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=_labelled, action="append", default=[], metavar="LABEL=FOLDER",
                        help="a campaign's run folder (repeatable); omit to redraw from the JSON")
    parser.add_argument("--fork", type=_labelled, action="append", default=[], metavar="LABEL=FOLDER",
                        help="a run started from v1's weights (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("docs/_static/figures"))
    args = parser.parse_args(argv)
    record = args.out / "validation_curve.json"
    if args.run:
        torch.set_num_threads(2)
        data = measure(args.run, args.fork)
        temporary = record.with_name(f".{record.name}.tmp")
        temporary.write_text(json.dumps(data, indent=2) + "\n")
        temporary.replace(record)
    else:
        data = json.loads(record.read_text())
    draw(data, args.out / "validation_curve.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
