"""Enhance a low-light photo with a (randomly initialised) small LLFlow and write the result as a PNG.

The weights are random, so the picture is not a real enhancement: the script shows the whole path
(read with Pillow, histogram equalization, padding, encoder, reverse flow, crop, write) working
end to end. Load trained weights with ``LLFlow.from_official(path)`` instead.

    python examples/enhance_lol.py --output enhanced.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from flowkit.models import LLFlow, LLFlowConfig

DEFAULT_INPUT = Path(__file__).resolve().parents[2] / "shared" / "data" / "LOL" / "eval15" / "low" / "778.png"


def read_image(path: Path) -> torch.Tensor:
    """An RGB image file as a ``(1, 3, H, W)`` float tensor in ``[0, 1]``; errors name the file."""
    try:
        with Image.open(path) as image:  # Pillow's decompression-bomb limit stays on
            array = np.asarray(image.convert("RGB"))
    except (OSError, Image.DecompressionBombError) as error:
        raise SystemExit(f"cannot read image {path}: {error}") from error
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).float() / 255


def generated_image(height: int = 120, width: int = 180) -> torch.Tensor:
    """A dark synthetic scene (gradients and a bright square), used when the LOL image is absent."""
    y = torch.linspace(0, 1, height).view(1, 1, height, 1)
    x = torch.linspace(0, 1, width).view(1, 1, 1, width)
    image = torch.cat([0.15 * x.expand(1, 1, height, width), 0.1 * y.expand(1, 1, height, width),
                       0.05 * (x * y)], dim=1)
    image[:, :, height // 3: height // 2, width // 3: width // 2] = 0.3
    return image.clamp(0, 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT,
                        help="low-light image (default: LOL eval15 778.png; a generated image if absent)")
    parser.add_argument("--output", type=Path, default=Path("enhanced.png"), help="where to write the PNG")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 decodes the prior mean")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="enhance a 96x96 crop only (for CI)")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    if args.input.is_file():
        low, source = read_image(args.input), str(args.input)
    else:
        low, source = generated_image(), "a generated image"
    if args.quick:
        low = low[:, :, :96, :96]
    model = LLFlow(LLFlowConfig.lol_small()).eval()
    start = time.perf_counter()
    enhanced = model.enhance(low, temperature=args.temperature, generator=torch.Generator().manual_seed(args.seed))
    seconds = time.perf_counter() - start
    pixels = (enhanced[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(args.output)
    print(f"enhanced {source} ({low.shape[3]}x{low.shape[2]}) in {seconds:.2f} s -> {args.output}")


if __name__ == "__main__":
    main()
