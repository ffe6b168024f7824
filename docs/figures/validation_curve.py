"""The model card's validation curve: PSNR against training step, for the v2 runs and the shipped models.

Run from the repository root::

    python docs/figures/validation_curve.py \
        --run "campaign=$HOME/.cache/flowkit/runs/synthetic_v2" \
        --run "campaign, dequantised targets=$HOME/.cache/flowkit/runs/synthetic_v2_dq" \
        --fork "from v1: v2 data, lr 2.5e-4=$HOME/.cache/flowkit/ft_v1" ... \
        --prior-mean-through "campaign=4843" --prior-mean-through "campaign, dequantised targets=1500" \
        --prior-mean-through "from v1: v2 data, lr 2.5e-4=600" ...
    python docs/figures/validation_curve.py --fork "from v3=$HOME/.cache/flowkit/runs/v3_continue" \
        --fork-from "from v3=llflow-synthetic-v3"

reads each run's ``log.csv`` (its EMA weights' validation, on the first 12 Kodak24 photographs
darkened by ``LowLightSynthesizer.lol_wide()`` with seed 21; every run must have validated on the
same pairs), scores every shipped model on those pairs (the first run's ``synthetic/val`` folder)
with the trainer's own :func:`~flowkit.models.llflow.train.trainer.validate` in both decodes (the
pair at each model's own default temperature), and
writes it all to ``validation_curve.json`` beside the figure. A ``--fork`` is a run started from a
shipped model's weights (``--init``; v1's unless ``--fork-from LABEL=NAME`` names another): its
steps are drawn after that model's training steps, from that model's score in the decode the
trainer validates with. Runs and forks already in the JSON stay there (their run folders may be
gone) unless a new one takes the same label; the shipped models are scored anew.

The trainer validated with the prior mean's decode until December 2026 and with the mean of an
antithetic pair since; the log does not say which, so ``--prior-mean-through LABEL=STEP`` names
the last step of a run or fork that was scored at the prior mean. The figure has a panel for each
decode. Without ``--run`` it redraws the figure from the JSON.
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
from flowkit.models.llflow.pretrained import MEAN_OF_PAIR, PRIOR_MEAN, pretrained_names
from flowkit.models.llflow.train.trainer import validate

PAIRS = 12  # the run's val_limit
# The step each shipped model's training stopped at, where its point sits on the step axis.
# v4 is v3 fine-tuned 800 steps on other darkening (synthetic_v4), drawn after v3's.
TRAINED_STEPS = {"llflow-small-synthetic": 1400, "llflow-synthetic-v2": 4843, "llflow-synthetic-v3": 12000,
                 "llflow-synthetic-v4": 12800}
V1 = "llflow-small-synthetic"  # the weights the forks start from
DECODES = {"prior mean": PRIOR_MEAN, "mean of a pair": MEAN_OF_PAIR}


def _validations(run: Path, prior_mean_through: int) -> list[dict[str, float | str]]:
    scores: dict[int, dict[str, float]] = {}
    with open(run / "log.csv", newline="") as file:
        for row in csv.DictReader(file):
            if row["kind"] in ("val/psnr", "val/ssim"):
                scores.setdefault(int(row["step"]), {})[row["kind"][4:]] = float(row["loss"])
    return [{"step": s, "decode": "prior mean" if s <= prior_mean_through else "mean of a pair"} | v
            for s, v in sorted(scores.items())]


def _labelled(option: str) -> tuple[str, Path]:
    label, _, folder = option.rpartition("=")
    if not label:
        raise argparse.ArgumentTypeError(f"expected LABEL=FOLDER, got {option!r}")
    return label, Path(folder).expanduser()


def _labelled_step(option: str) -> tuple[str, int]:
    label, _, step = option.rpartition("=")
    if not label or not step.isdigit():
        raise argparse.ArgumentTypeError(f"expected LABEL=STEP, got {option!r}")
    return label, int(step)


def _score(model: LLFlow, pairs, options: dict) -> dict[str, float]:
    result = validate(model, pairs, torch.device("cpu"), decode=options)
    return {"psnr": result["psnr"], "ssim": result["ssim"]}


def _labelled_name(option: str) -> tuple[str, str]:
    label, _, name = option.rpartition("=")
    if not label or name not in TRAINED_STEPS:
        raise argparse.ArgumentTypeError(f"expected LABEL=NAME with NAME one of {sorted(TRAINED_STEPS)}, got {option!r}")
    return label, name


def measure(data: dict, runs: list[tuple[str, Path]], forks: list[tuple[str, Path]],
            fork_from: dict[str, str], prior_mean_through: dict[str, int]) -> dict:
    """``data`` with these runs and forks added (or replaced) and every shipped model scored anew."""
    if unknown := set(prior_mean_through) - {label for label, _ in runs + forks}:
        raise SystemExit(f"--prior-mean-through names no --run or --fork: {sorted(unknown)}")
    if unknown := set(fork_from) - {label for label, _ in forks}:
        raise SystemExit(f"--fork-from names no --fork: {sorted(unknown)}")
    pairs = Subset(PairedImageDataset.from_root((runs + forks)[0][1] / "synthetic" / "val"), range(PAIRS))
    shipped, models = {}, {}
    for name in pretrained_names():
        models[name] = model = LLFlow.from_pretrained(name)
        shipped[name] = {"step": TRAINED_STEPS.get(name), "temperature": model.enhance_defaults["temperature"]}
        for decode, options in DECODES.items():
            # The pair at the model's own temperature (v3's is 0.8).
            shipped[name][decode] = _score(model, pairs, (options | model.enhance_defaults)
                                           if decode == "mean of a pair" else options)
            print(f"{name}, {decode}: PSNR {shipped[name][decode]['psnr']:.2f} dB")
    starts = dict(data.get("fork_starts", {}))
    for label, _ in forks:
        # Where the fork's line starts: its weights scored as the trainer validates (T = 1).
        name = fork_from.get(label, V1)
        starts[label] = {"from": name} | {decode: _score(models[name], pairs, options)
                                          for decode, options in DECODES.items()}

    def read(folders):
        return {label: _validations(folder, prior_mean_through.get(label, -1)) for label, folder in folders}

    return {"pairs": PAIRS, "runs": data.get("runs", {}) | read(runs), "forks": data.get("forks", {}) | read(forks),
            "fork_starts": starts, "shipped": shipped}


def draw(data: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.4), dpi=150, sharey=True)
    run_colours = dict(zip(data["runs"], ("tab:blue", "tab:green", "tab:purple")))
    fork_colours = dict(zip(data["forks"], ("tab:red", "tab:brown", "tab:pink", "tab:gray", "tab:olive",
                                            "tab:purple")))
    shipped_colours = {"llflow-small-synthetic": "black", "llflow-synthetic-v2": "tab:orange",
                       "llflow-synthetic-v3": "tab:cyan", "llflow-synthetic-v4": "darkgoldenrod"}
    # Forks recorded before fork_starts existed all started from v1, whose default decode is T = 1.
    starts = {label: data.get("fork_starts", {}).get(label, {"from": V1} | data["shipped"][V1])
              for label in data["forks"]}
    for ax, decode in zip(axes, DECODES):
        for label, rows in data["runs"].items():
            rows = [r for r in rows if r["decode"] == decode]
            if rows:
                ax.plot([r["step"] for r in rows], [r["psnr"] for r in rows], "o-", color=run_colours[label],
                        label=f"{label} (EMA)")
        for label, rows in data["forks"].items():
            rows = [r for r in rows if r["decode"] == decode]
            if rows:
                start = starts[label]
                steps = TRAINED_STEPS[start["from"]]
                ax.plot([steps] + [steps + r["step"] for r in rows],
                        [start[decode]["psnr"]] + [r["psnr"] for r in rows], ".--", color=fork_colours[label],
                        lw=1, label=label)
        for name, score in data["shipped"].items():
            colour = shipped_colours[name]
            ax.axhline(score[decode]["psnr"], color=colour, lw=0.8, ls="--")
            if score["step"] is not None:
                at = "" if decode == "prior mean" or score.get("temperature", 1.0) == 1.0 \
                    else f", pair at T = {score['temperature']:g}"
                ax.plot([score["step"]], [score[decode]["psnr"]], "s", color=colour, ms=8,
                        label=f"{name} (shipped, trained {score['step']} steps{at})")
        ax.set_title(f"decoded at the {decode}" if decode == "prior mean" else f"decoded as the {decode} "
                     "(the shipped models' default)", fontsize=9)
        ax.set_xlabel("training step (8 patches of 128x128 each)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("PSNR (dB)")
    fig.suptitle(f"Validation: {data['pairs']} Kodak24 photographs darkened by lol_wide (seed 21)", fontsize=10)
    fig.tight_layout()
    save_png(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=_labelled, action="append", default=[], metavar="LABEL=FOLDER",
                        help="a campaign's run folder (repeatable); omit to redraw from the JSON")
    parser.add_argument("--fork", type=_labelled, action="append", default=[], metavar="LABEL=FOLDER",
                        help="a run started from a shipped model's weights, v1's by default (repeatable)")
    parser.add_argument("--fork-from", type=_labelled_name, action="append", default=[], metavar="LABEL=NAME",
                        help="the shipped model the fork LABEL started from (repeatable)")
    parser.add_argument("--prior-mean-through", type=_labelled_step, action="append", default=[],
                        metavar="LABEL=STEP", help="the last step the run or fork LABEL scored at the prior mean "
                        "(repeatable; default: none, every validation is of the mean of a pair)")
    parser.add_argument("--out", type=Path, default=Path("docs/_static/figures"))
    args = parser.parse_args(argv)
    record = args.out / "validation_curve.json"
    data = json.loads(record.read_text()) if record.exists() else {}
    if args.run or args.fork:
        torch.set_num_threads(2)
        data = measure(data, args.run, args.fork, dict(args.fork_from), dict(args.prior_mean_through))
        temporary = record.with_name(f".{record.name}.tmp")
        temporary.write_text(json.dumps(data, indent=2) + "\n")
        temporary.replace(record)
    draw(data, args.out / "validation_curve.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
