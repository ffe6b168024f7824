"""Score an LLFlow model on the model card's exposure sets: does its brightness follow the input's?

Run from the repository root with the research data in ../shared/data (about 15 minutes a model on
2 CPU cores)::

    python docs/figures/exposure_scores.py                          # the default shipped model
    python docs/figures/exposure_scores.py llflow-synthetic-v2      # another shipped model
    python docs/figures/exposure_scores.py runs/x/last.pt --temperature 0.8 --json scores.json

A checkpoint is scored by its EMA weights, as ``model_card.py --export`` would ship them. Every
score uses the model's own enhancement (the mean of an antithetic pair, seed 0; ``--temperature``
sets a checkpoint's temperature). It prints one line per measurement of the table in the model
card's *A wider range of exposures*:

- ``kodak24_lol``, ``kodak24_lol_wide``, ``kodak24_mild``, ``kodak24_middle``: the 24 Kodak
  photographs darkened once by ``LowLightSynthesizer.lol()``, ``.lol_wide()``, and ``lol_wide``
  with gamma and scale replaced by 1-1.5 and 0.45-0.9 (mild) or 1.3-2.0 and 0.3-0.6 (middle):
  mean PSNR of the saved 8-bit output, and the mean brightness of input, output and ground truth;
- ``lol778``: PSNR on real LOL eval15 #778;
- ``dicm_lime``: the 73 DICM and LIME photographs (no ground truth): the output's mean brightness,
  the share of its pixels clipped to white (all three channels at 254 or more of 255), both
  averaged over the photographs, the mean output by input brightness (under 0.1, 0.1-0.25,
  above 0.25), and the mean chroma (largest channel minus smallest) of the output where the input
  is near white (every channel at 0.95 or more), which a colour cast in the whites raises;
- ``diverged``: of the 24 real photographs of the card's figures (LOL eval15's 15 inputs, the six
  darkest DICM, LIME 1, 3 and 9), how many had a decode diverge and drawn again
  (:meth:`~flowkit.models.LLFlow.enhance` warns).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from model_card import figure_photographs

from flowkit.models import LLFlow
from flowkit.models.llflow.data import LowLightSynthesizer, PairedImageDataset, read_image, write_synthetic_pairs
from flowkit.models.llflow.data.io import to_uint8
from flowkit.models.llflow.metrics import psnr
from flowkit.models.llflow.pretrained import DEFAULT_PRETRAINED, MEAN_OF_PAIR, pretrained_names

# Kodak24's seeds: 11 for the card's lol set (model_card.py), 21 for lol_wide, which is the
# validation set of the synthetic_v2 runs (their seed 20, plus one).
SEEDS = {"lol": 11, "lol_wide": 21, "mild": 11, "middle": 11}
DARKENINGS = {
    "lol": LowLightSynthesizer.lol(),
    "lol_wide": LowLightSynthesizer.lol_wide(),
    "mild": dataclasses.replace(LowLightSynthesizer.lol_wide(), gamma=(1.0, 1.5), scale=(0.45, 0.9)),
    "middle": dataclasses.replace(LowLightSynthesizer.lol_wide(), gamma=(1.3, 2.0), scale=(0.3, 0.6)),
}
WHITE = 254  # of 255, in every channel: a pixel clipped to white
NEAR_WHITE = 0.95  # in every channel of the input: a near-white pixel, whose output should stay grey
BRIGHTNESS_GROUPS = ((0.0, 0.1), (0.1, 0.25), (0.25, 1.0))


def saved(output: torch.Tensor) -> torch.Tensor:
    """The 8-bit image a user saves, as floats in [0, 1]."""
    return to_uint8(output.clamp(0, 1)).to(torch.float64) / 255


def kodak24(model: LLFlow, data: Path, darkening: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        write_synthetic_pairs(data / "photos" / "Kodak24", Path(folder), seed=SEEDS[darkening], multiple_of=8,
                              synthesizer=DARKENINGS[darkening])
        rows = []
        for item in PairedImageDataset.from_root(folder):
            low, high = item["low"][None], item["high"][None].to(torch.float64)
            out = saved(model.enhance(low, histeq=item["histeq"][None], clamp=False))
            rows.append({"psnr": float(psnr(out, high)), "input": float(low.mean()), "output": float(out.mean()),
                         "truth": float(high.mean())})
    return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}


def lol778(model: LLFlow, data: Path) -> dict[str, float]:
    low = read_image(data / "LOL" / "eval15" / "low" / "778.png")[None]
    high = read_image(data / "LOL" / "eval15" / "high" / "778.png")[None].to(torch.float64)
    return {"psnr": float(psnr(saved(model.enhance(low, clamp=False)), high))}


def dicm_lime(model: LLFlow, data: Path) -> dict[str, float]:
    root = data / "real_lowlight"
    paths = sorted((root / "DICM" / "test" / "low").glob("*.jpg")) + sorted((root / "LIME" / "test" / "low").glob("*.bmp"))
    rows, white_chroma = [], []
    for path in paths:
        low = read_image(path)[None]
        out = to_uint8(model.enhance(low).clamp(0, 1))
        rows.append((float(low.mean()), float(out.double().mean() / 255), float((out >= WHITE).all(dim=1).double().mean())))
        # The output's colour where the input is near white, so nearly grey: a cast shows as chroma.
        near_white = (low >= NEAR_WHITE).all(dim=1)
        chroma = (out.amax(dim=1) - out.amin(dim=1)).double() / 255
        white_chroma.append(chroma[near_white])
    white_chroma = torch.cat(white_chroma)
    scores = {"photographs": len(rows), "output": sum(r[1] for r in rows) / len(rows),
              "clipped": sum(r[2] for r in rows) / len(rows), "near_white_pixels": white_chroma.numel(),
              "near_white_chroma": float(white_chroma.mean()) if white_chroma.numel() else float("nan")}
    for low, high in BRIGHTNESS_GROUPS:
        group = [r[1] for r in rows if low <= r[0] < high]
        scores[f"output_input_{low:g}-{high:g}"] = sum(group) / len(group) if group else float("nan")
    return scores


def diverged(model: LLFlow, data: Path) -> dict[str, object]:
    eval15, real = figure_photographs(data)
    lows = eval15 + real
    names = []
    for path in lows:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            model.enhance(read_image(path)[None])
        if any(issubclass(w.category, RuntimeWarning) and "diverged" in str(w.message) for w in caught):
            names.append(f"{path.parent.parent.parent.name}/{path.stem}")
    return {"count": len(names), "of": len(lows), "names": names}


SETS = {**{f"kodak24_{darkening}": functools.partial(kodak24, darkening=darkening) for darkening in DARKENINGS},
        "lol778": lol778, "dicm_lime": dicm_lime, "diverged": diverged}


def load(model: str, temperature: float | None) -> LLFlow:
    if model in pretrained_names():
        loaded = LLFlow.from_pretrained(model)
    else:
        from flowkit.models.llflow.cli import load_model

        loaded = load_model(model, ema=True)
    if temperature is not None:
        loaded.enhance_defaults = {**MEAN_OF_PAIR, **loaded.enhance_defaults, "temperature": temperature}
    return loaded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=None,
                        help="a shipped model's name or a training checkpoint (default: the default model)")
    parser.add_argument("--temperature", type=float, default=None, help="default: the model's own")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    parser.add_argument("--json", type=Path, help="also write the scores here")
    args = parser.parse_args(argv)
    unknown = [name for name in args.sets.split(",") if name not in SETS]
    if unknown:
        parser.error(f"--sets: unknown set {unknown[0]!r}; expected some of {', '.join(SETS)}")
    torch.set_num_threads(2)
    model = load(args.model or DEFAULT_PRETRAINED, args.temperature)
    results: dict[str, object] = {"model": args.model or DEFAULT_PRETRAINED,
                                  "temperature": model.enhance_defaults["temperature"]}
    with torch.no_grad():
        for name in args.sets.split(","):
            results[name] = SETS[name](model, args.data)
            print(f"{name}: {json.dumps(results[name])}", flush=True)
    if args.json:
        temporary = args.json.with_name(f".{args.json.name}.tmp")  # whole or not at all
        temporary.write_text(json.dumps(results, indent=2) + "\n")
        temporary.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
