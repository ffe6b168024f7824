"""Train a tiny LLFlow on synthetic low-light pairs, evaluate it, and enhance a real LOL image.

The pairs are darkened versions of the BSDS500 photographs in ../shared/data/photos (generated
scenes when those are absent). On a 2-core CPU the full run (200 iterations) takes a few minutes;
``--quick`` runs 20 iterations to check that the path works end to end.

    python examples/train_tiny.py --output runs/example [--quick]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flowkit.models.llflow.cli import main as flowkit
from flowkit.models.llflow.train import load_config, train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def run(output: Path, quick: bool) -> None:
    config = load_config("tiny")
    config.run.output = str(output / "run")
    photos = SHARED / "photos" / "BSDS500" / "train"
    if photos.is_dir():
        config.data.synthetic_source = str(photos)  # darkened real photographs
    if quick:
        config.run.iterations = config.run.val_every = config.run.checkpoint_every = 20
        config.data.synthetic_count, config.data.synthetic_val_count = 16, 2
    result = train(config, progress=not quick)
    last = result.validations[-1]
    print(f"held-out pairs after {result.step} steps: PSNR {last['psnr']:.2f} dB "
          f"(dark input {last['input_psnr']:.2f} dB), SSIM {last['ssim']:.3f}")

    checkpoint = str(output / "run" / "last.pt")
    synthetic_val = output / "run" / "synthetic" / "val"
    flowkit(["evaluate", "--data", str(synthetic_val), "--checkpoint", checkpoint,
             "--output", str(output / "evaluation")])
    lol = SHARED / "LOL" / "eval15" / "low" / "778.png"
    if lol.exists():
        flowkit(["enhance", str(lol), "-o", str(output / "enhanced"), "--checkpoint", checkpoint])
        print(f"enhanced {lol.name} -> {output / 'enhanced' / '778.png'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("runs/example"))
    parser.add_argument("--quick", action="store_true", help="20 iterations, to check the path")
    args = parser.parse_args()
    run(args.output, args.quick)
