"""Score shipped models and training checkpoints on the held-out Kodak24 validation pairs.

Run from the repository root with the research data in ../shared/data::

    python docs/figures/validation.py [--pretrained NAME ...] [--checkpoint RUN/last.pt ...]

Kodak24 (never trained on) is darkened twice, once by each synthesizer the shipped models were
trained with: ``LowLightSynthesizer.lol()`` with seed 11 (v1's validation set) and
``LowLightSynthesizer.lol_wide()`` with seed 21 (the synthetic_v2 run's). Every shipped model and
every ``--checkpoint`` (its EMA weights) is scored on all 24 pairs of both, as it enhances by
default and as the reference decodes (the prior mean, ``temperature=0``, labelled ``[prior mean]``), with
:func:`flowkit.models.llflow.metrics.score_enhancement`, and the output's mean brightness and HSV
saturation are compared with the ground truth's. This is the set that decides whether new weights
ship; LOL #778 never does. The scores go to ``validation_metrics.json`` in ``--out``; with
``--pretrained``, only the shipped models named are scored, and the file's other entries are kept.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from flowkit.models import LLFlow
from flowkit.models.llflow.cli import load_model
from flowkit.models.llflow.data import LowLightSynthesizer, PairedImageDataset, to_uint8, write_synthetic_pairs
from flowkit.models.llflow.metrics import score_enhancement
from flowkit.models.llflow.pretrained import pretrained_names

DECODES = {"": {}, " [prior mean]": {"temperature": 0.0}}
SETS = {"kodak24_lol": (LowLightSynthesizer.lol, 11), "kodak24_lol_wide": (LowLightSynthesizer.lol_wide, 21)}


def colour(image: torch.Tensor) -> tuple[float, float]:
    """Mean brightness and mean HSV saturation (of pixels with value > 0.05) of a (3, H, W) image."""
    value, low = image.amax(0), image.amin(0)
    saturation = ((value - low) / value.clamp_min(1e-6))[value > 0.05]
    return image.mean().item(), saturation.mean().item()


def score(model: LLFlow, pairs: PairedImageDataset, **options) -> dict[str, float]:
    rows = []
    for item in pairs:
        with torch.no_grad():
            raw = model.enhance(item["low"][None], histeq=item["histeq"][None], clamp=False, **options)
        scores = {k: float(v) for k, v in score_enhancement(raw, item["high"][None], perceptual=False).items()}
        saved = to_uint8(raw[0].clamp(0, 1)).float() / 255
        (bright, sat), (gt_bright, gt_sat) = colour(saved), colour(item["high"])
        rows.append(scores | {"brightness": bright, "gt_brightness": gt_bright, "saturation": sat,
                              "gt_saturation": gt_sat})
    return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]} | {"images": len(rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--checkpoint", type=Path, action="append", default=[])
    parser.add_argument("--pretrained", choices=pretrained_names(), action="append", default=None,
                        help="score only this shipped model (repeatable; default: every one)")
    parser.add_argument("--out", type=Path, default=Path("docs/_static/figures"))
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    named = {name: LLFlow.from_pretrained(name) for name in args.pretrained or pretrained_names()}
    for path in args.checkpoint:
        # A run's last.pt knows its step; best.pt's is in the best.json beside it.
        step = torch.load(path, map_location="cpu", weights_only=True).get("step")
        if step is None and (path.parent / "best.json").exists():
            step = json.loads((path.parent / "best.json").read_text())["step"]
        named[f"{path.parent.name}/{path.name} step {step} (EMA)"] = load_model(path, ema=True)
    # Each model as it enhances by default, and as the reference decodes (the prior mean).
    models = {(f"{name}{decode}", decode): model for name, model in named.items() for decode in DECODES}
    results: dict[str, dict[str, dict[str, float]]] = {name: {} for name, _ in models}
    with tempfile.TemporaryDirectory() as folder:
        for set_name, (synthesizer, seed) in SETS.items():
            write_synthetic_pairs(args.data / "photos" / "Kodak24", Path(folder) / set_name, seed=seed,
                                  multiple_of=8, synthesizer=synthesizer())
            pairs = PairedImageDataset.from_root(Path(folder) / set_name)
            for (name, decode), model in models.items():
                results[name][set_name] = score(model.eval(), pairs, **DECODES[decode])
                row = results[name][set_name]
                print(f"{name:50s} {set_name:17s} PSNR {row['psnr']:.2f}  SSIM {row['ssim']:.4f}  "
                      f"GT-mean PSNR {row['gtmean_psnr']:.2f}  brightness {row['brightness']:.3f} "
                      f"(GT {row['gt_brightness']:.3f})  saturation {row['saturation']:.3f} "
                      f"(GT {row['gt_saturation']:.3f})", flush=True)
    record = args.out / "validation_metrics.json"
    if args.pretrained and record.exists():
        results = json.loads(record.read_text()) | results
    args.out.mkdir(parents=True, exist_ok=True)
    temporary = record.with_name(f".{record.name}.tmp")  # whole or not at all
    temporary.write_text(json.dumps(results, indent=2) + "\n")
    temporary.replace(record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
