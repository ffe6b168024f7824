"""The shipped model's release artefacts: weights, model-card metrics and figures.

Run from the repository root with the research data in ../shared/data::

    # export a training run's EMA weights into the package (prints the sha256 to record in
    # flowkit/models/llflow/pretrained.py), with the card entries measured here:
    python docs/figures/model_card.py --export runs/default/last.pt --name llflow-synthetic-v5 --wall-time "2 h 05 min"
    # the same, stored in float16 (half the file; measured as the rounded weights it stores),
    # decoding by default as the mean of a pair at temperature 0.8:
    python docs/figures/model_card.py --export runs/default/last.pt --storage float16 --temperature 0.8 --name ...
    # measure the installed shipped model and draw the figures:
    python docs/figures/model_card.py

It prints the metric tables of the model card (real LOL #778 under the standard protocol and
LLFlow's, with and without GT-mean alignment, beside the published LLFlow output; the
Kodak24-synthetic validation set), each for the model's default enhancement and for the
reference's decode of the prior mean, and writes ``model_card_metrics.json`` and the figures
``eval15_grid.png``, ``real_lowlight_grid.png`` and ``lol778.png`` to ``docs/_static/figures``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

from flowkit.models import LLFlow
from flowkit.models.llflow.data import LowLightSynthesizer, PairedImageDataset, read_image, write_synthetic_pairs
from flowkit.models.llflow.metrics import psnr, score_enhancement
from flowkit.models.llflow.pretrained import MEAN_OF_PAIR, WEIGHTS_DIR, export_pretrained, round_weights

FIGURES = Path("docs/_static/figures")
SUMMARY = ("a slimmed LOL_smallNet trained by flowkit on 580 photographs darkened by the LOL-calibrated "
           "synthesizer with exposures widened to real low-light ratios (not on LOL); see the model card in the docs")
DARKEST_DICM = 6  # DICM is mixed (means 4-195 of 255): show its darkest images
LIME_SELECTION = ("1", "3", "9")


def scores(output: torch.Tensor, high: torch.Tensor) -> dict[str, float]:
    """Every reported metric, from flowkit.models.llflow.metrics.score_enhancement (as `flowkit evaluate` prints them)."""
    return {name: float(value) for name, value in score_enhancement(output, high).items()}


def lol778(model: LLFlow, data: Path) -> dict[str, dict[str, float]]:
    lol = data / "LOL"
    low = read_image(lol / "eval15" / "low" / "778.png")[None]
    high = read_image(lol / "eval15" / "high" / "778.png")[None]
    published = read_image(lol / "eval15_reference_outputs" / "LLFlow_official" / "778.png")[None]
    return {
        "flowkit": scores(model.enhance(low, clamp=False), high),
        "flowkit_prior_mean": scores(model.enhance(low, temperature=0.0, clamp=False), high),
        "llflow_published": scores(published, high),
        "input": scores(low, high),
    }


def kodak24(model: LLFlow, data: Path, **options) -> dict[str, float]:
    # The training run's validation pairs: Kodak24 darkened once by the LOL synthesizer, seed 11.
    with tempfile.TemporaryDirectory() as folder:
        write_synthetic_pairs(data / "photos" / "Kodak24", Path(folder), seed=11, multiple_of=8,
                              synthesizer=LowLightSynthesizer.lol())
        pairs = PairedImageDataset.from_root(folder)
        rows = []
        for item in pairs:
            low, high = item["low"][None], item["high"][None]
            rows.append(scores(model.enhance(low, histeq=item["histeq"][None], clamp=False, **options), high)
                        | {"input_psnr": float(psnr(low, high))})
    return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]} | {"images": len(rows)}


def grid(images: list[torch.Tensor], columns: int, height: int) -> torch.Tensor:
    """Resize each (3, H, W) image to ``height`` rows and tile them, ``columns`` per row, 4-px gaps."""
    resized = []
    for image in images:
        width = round(image.shape[2] * height / image.shape[1])
        resized.append(torch.nn.functional.interpolate(image[None], size=(height, width), mode="area")[0])
    rows, gap = [], 4
    for start in range(0, len(resized), columns):
        row = resized[start : start + columns]
        parts = []
        for image in row:
            parts += [image, torch.ones(3, height, gap)]
        rows.append(torch.cat(parts[:-1], dim=2))
    width = max(r.shape[2] for r in rows)
    padded = []
    for row in rows:
        padded += [torch.nn.functional.pad(row, (0, width - row.shape[2]), value=1.0), torch.ones(3, gap, width)]
    return torch.cat(padded[:-1], dim=1)


def figure_photographs(data: Path) -> tuple[list[Path], list[Path]]:
    """The real low-light photographs the figures show: LOL eval15's 15 inputs, and the darkest
    DICM photographs with the chosen LIME ones."""
    lows = sorted((data / "LOL" / "eval15_low_only" / "low").glob("*.png"), key=lambda p: int(p.stem))
    dicm = sorted((data / "real_lowlight" / "DICM" / "test" / "low").glob("*.jpg"))
    real = sorted(dicm, key=lambda p: float(read_image(p).mean()))[:DARKEST_DICM]
    real += [data / "real_lowlight" / "LIME" / "test" / "low" / f"{n}.bmp" for n in LIME_SELECTION]
    return lows, real


def figures(model: LLFlow, data: Path, out: Path) -> None:
    from flowkit.models.llflow.data import write_image

    lows, real = figure_photographs(data)
    tiles = []
    for path in lows:
        low = read_image(path)
        tiles += [low, model.enhance(low[None])[0]]
    write_image(out / "eval15_grid.png", grid(tiles, 6, 160))

    tiles = []
    for path in real:
        low = read_image(path)
        tiles += [low, model.enhance(low[None])[0]]
    write_image(out / "real_lowlight_grid.png", grid(tiles, 6, 200))

    lol = data / "LOL"
    low = read_image(lol / "eval15" / "low" / "778.png")
    tiles = [low, model.enhance(low[None])[0],
             read_image(lol / "eval15_reference_outputs" / "LLFlow_official" / "778.png"),
             read_image(lol / "eval15" / "high" / "778.png")]
    write_image(out / "lol778.png", grid(tiles, 4, 240))


def mild_share(state: dict) -> str:
    """The run's ``[data] synthesizer_mild_*`` share, in words for the card ("" without one)."""
    data = state["config"]["data"]
    fraction = data.get("synthesizer_mild_fraction", 0.0)
    if not fraction:
        return ""
    words = [f"{name.replace('_', ' ')} {value[0]:g}-{value[1]:g}" for name in ("gamma", "scale", "red_gain", "blue_gain")
             if (value := data.get(f"synthesizer_mild_{name}")) is not None]
    return f", {fraction:.0%} of them instead mildly ({', '.join(words)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=FIGURES)
    parser.add_argument("--export", type=Path, metavar="CHECKPOINT", help="export this run's EMA weights")
    parser.add_argument("--wall-time", default="", help="the training run's wall time, for the card")
    parser.add_argument("--weights", choices=["ema", "raw"], default="ema",
                        help="export the run's moving average or its last weights")
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("--name", help="the exported model's name (with --export; a new one, or its file is replaced)")
    parser.add_argument("--recipe", default="flowkit train --config synthetic_v2 --data-dir ../shared/data",
                        help="how the exported run was trained, for the card")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="the exported model's default decode: the mean of an antithetic pair at this temperature")
    parser.add_argument("--storage", choices=["float32", "float16"], default="float32",
                        help="the exported file's floating-point type (float16 halves it)")
    args = parser.parse_args(argv)
    if args.export and not args.name:
        parser.error("--export needs --name, the new model's name (its file goes to flowkit/models/llflow/weights)")
    torch.set_num_threads(2)

    if args.export:
        from flowkit.models.llflow.cli import load_model

        model = load_model(args.export, ema=args.weights == "ema")
        state = torch.load(args.export, weights_only=True, map_location="cpu")
        storage = getattr(torch, args.storage)
        round_weights(model, storage)  # the card measures what the file will hold
        # ... as it will enhance: register the same defaults with the model in pretrained.py.
        model.enhance_defaults = {**MEAN_OF_PAIR, "temperature": args.temperature}
    else:
        model, state = LLFlow.from_pretrained(), None
    # As the model enhances by default, and as the reference decodes (the prior mean, temperature 0).
    results = {"lol778": lol778(model, args.data), "kodak24_synthetic": kodak24(model, args.data),
               "kodak24_synthetic_prior_mean": kodak24(model, args.data, temperature=0.0)}
    print(json.dumps(results, indent=2))

    if args.export:
        optim, run = state["config"]["optim"], state["config"]["run"]  # the run's own TrainConfig
        ours = results["lol778"]["flowkit"]
        kodak = results["kodak24_synthetic"]
        card = {
            "name": args.name,
            "summary": SUMMARY,
            "data": "synthetic pairs: 580 photographs (BSDS500, Sun-Hays 80, Urban100) darkened on the fly by "
                    "LowLightSynthesizer.lol_wide() (LOL-fitted, exposures widened to 5-30x)" + mild_share(state)
                    + " + the 3 real LOL our485 pairs #697, #717, #776 (10x each); not trained on LOL's 485 training pairs",
            "recipe": args.recipe,
            "steps": str(state["step"]),
            "wall_time": args.wall_time,
            "hardware": f"CPU only, 2 cores ({platform.processor() or platform.machine()}), torch {torch.__version__}, "
                        + {"bf16": "bfloat16 autocast", "fp16": "float16 autocast"}.get(run["amp"], "float32"),
            "weights": (f"exponential moving average (decay {optim['ema']:g})" if args.weights == "ema" and optim["ema"]
                        else "the last step's weights") + f", stored in {args.storage}; chosen on Kodak24 "
                        "validation PSNR, never on LOL",
            "inference": f"the mean of an antithetic pair of decodes at temperature {args.temperature:g}, seed "
                         f"{MEAN_OF_PAIR['seed']}",
            "lol778_psnr": f"{ours['psnr']:.2f}",
            "lol778_ssim": f"{ours['ssim']:.4f}",
            "lol778_lpips": f"{ours['lpips']:.4f}",
            "lol778_gtmean_psnr": f"{ours['gtmean_psnr']:.2f}",
            "kodak24_synthetic_psnr": f"{kodak['psnr']:.2f}",
            "kodak24_synthetic_ssim": f"{kodak['ssim']:.4f}",
            "kodak24_synthetic_lpips": f"{kodak['lpips']:.4f}",
        }
        target = WEIGHTS_DIR / f"{args.name}.safetensors"
        digest = export_pretrained(model, target, card, dtype=storage)
        print(f"wrote {target} ({target.stat().st_size / 2**20:.1f} MiB), sha256 {digest}")
        print("record it in flowkit/models/llflow/pretrained.py, then run this script without --export")
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "model_card_metrics.json").write_text(json.dumps(results, indent=2) + "\n")
        if not args.no_figures:
            figures(model, args.data, args.out)
            print(f"wrote the figures to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
