"""The ``flowkit`` command: ``train``, ``evaluate`` and ``enhance`` LLFlow.

``python -m flowkit ...`` is the same command; ``torchrun --nproc_per_node N -m flowkit train ...``
trains on N processes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_model", "main"]


def load_model(checkpoint: str | Path, *, official: bool | None = None, device: str = "cpu", ema: bool = True):
    """An :class:`~flowkit.models.LLFlow` from a flowkit training checkpoint or a reference one.

    A flowkit checkpoint (written by ``flowkit train``) carries its model config; its EMA weights
    are used when present and ``ema`` is true. A reference checkpoint (a plain state dict with
    ``RRDB.*`` / ``flowUpsamplerNet.*`` keys) goes through :meth:`LLFlow.from_official`;
    ``official=None`` tells the two apart by their keys.
    """
    from flowkit.models import LLFlow, LLFlowConfig
    from flowkit.train.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    is_official = official if official is not None else "llflow_config" not in state
    if is_official:
        model = LLFlow.from_official(state)
    else:
        if "llflow_config" not in state or "model" not in state:
            raise ValueError(f"{checkpoint} is not a flowkit training checkpoint (no model/llflow_config)")
        config = dict(state["llflow_config"])
        config["stack_blocks"] = tuple(config["stack_blocks"])
        model = LLFlow(LLFlowConfig(**config))
        model.load_state_dict(state["ema"] if ema and "ema" in state else state["model"])
    return model.to(device).eval()


def _device(name: str | None) -> str:
    if name:
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


# --------------------------------------------------------------------------------------- train
def _train(args: argparse.Namespace) -> int:
    from flowkit.train import load_config, train

    config = load_config(args.config)
    if args.output:
        config.run.output = args.output
    if args.iterations:
        config.run.iterations = args.iterations
    if args.data_root:
        config.data.root = args.data_root
        config.data.synthetic_source = None
    result = train(config, resume=args.resume, device=args.device, progress=not args.no_progress)
    if result.validations:
        last = result.validations[-1]
        print(f"step {result.step}: PSNR {last['psnr']:.2f} dB (input {last['input_psnr']:.2f} dB), "
              f"SSIM {last['ssim']:.4f}, NLL {last['nll']:.3f}")
    return 0


# ------------------------------------------------------------------------------------ evaluate
def _evaluate(args: argparse.Namespace) -> int:
    from flowkit.data import PairedImageDataset
    from flowkit.metrics import psnr, reference_metrics, ssim

    device = _device(args.device)
    model = load_model(args.checkpoint, official=True if args.official else None, device=device)
    data = PairedImageDataset.from_root(args.data, args.split)
    rows: list[dict[str, Any]] = []
    columns = ["psnr", "ssim", "ref_psnr", "ref_ssim_gray", "ref_ssim_rgb",
               "gtmean_psnr", "gtmean_ssim_gray", "gtmean_ssim_rgb"]
    with torch.no_grad():
        for index in _progress(range(len(data)), "evaluate"):
            item = data[index]
            low, high = item["low"][None].to(device), item["high"][None].to(device)
            raw = model.enhance(low, histeq=item["histeq"][None].to(device), clamp=False)
            enhanced = raw.clamp(0, 1)
            plain = reference_metrics(raw, high)
            aligned = reference_metrics(raw, high, gt_mean=True)
            rows.append({
                "name": item["name"],
                "psnr": float(psnr(enhanced, high)[0]),
                "ssim": float(ssim(enhanced, high)[0]),
                "ref_psnr": float(plain["psnr"][0]),
                "ref_ssim_gray": float(plain["ssim_gray"][0]),
                "ref_ssim_rgb": float(plain["ssim_rgb"][0]),
                "gtmean_psnr": float(aligned["psnr"][0]),
                "gtmean_ssim_gray": float(aligned["ssim_gray"][0]),
                "gtmean_ssim_rgb": float(aligned["ssim_rgb"][0]),
            })
    mean = {c: sum(r[c] for r in rows) / len(rows) for c in columns}
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    report = {"checkpoint": str(args.checkpoint), "data": str(args.data), "split": args.split,
              "images": rows, "mean": mean}
    (output / "metrics.json").write_text(json.dumps(report, indent=2))
    table = _markdown([*rows, {"name": "**mean**", **mean}], columns)
    (output / "metrics.md").write_text(
        "Columns: `psnr`/`ssim` standard (float images, Gaussian SSIM on RGB); `ref_*` the reference "
        "protocol (uint8 truncation, 7x7 uniform SSIM); `gtmean_*` the same after GT-mean brightness "
        "alignment (as the reference's published numbers).\n\n" + table
    )
    print(table)
    return 0


def _markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| image | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in rows:
        lines.append(f"| {row['name']} | " + " | ".join(f"{row[c]:.4f}" for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _progress(iterable, desc: str):
    try:
        from tqdm import tqdm

        return tqdm(iterable, desc=desc, dynamic_ncols=True, file=sys.stderr)
    except ImportError:  # tqdm is optional
        return iterable


# ------------------------------------------------------------------------------------- enhance
def _inputs(paths: Sequence[str]) -> list[Path]:
    from flowkit.data import IMAGE_SUFFIXES

    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found.append(path)
    return found


def enhance_tiled(model, low: torch.Tensor, histeq: torch.Tensor, tile: int, overlap: int, **kwargs) -> torch.Tensor:
    """Enhance ``low`` (1, 3, H, W) in overlapping tiles of ``tile`` pixels, blended linearly.

    The histogram equalization is computed once on the whole image and cropped with each tile,
    so tiles see the same conditioning input as the whole image would.
    """
    _, _, height, width = low.shape
    if tile % 8 or tile <= 2 * overlap:
        raise ValueError(f"--tile must be a multiple of 8 larger than twice the overlap ({overlap}), got {tile}")
    out = torch.zeros_like(low)
    weight = torch.zeros_like(low[:, :1])
    step = tile - overlap
    tops = list(range(0, max(height - tile, 0) + 1, step)) or [0]
    lefts = list(range(0, max(width - tile, 0) + 1, step)) or [0]
    if tops[-1] + tile < height:
        tops.append(height - tile)
    if lefts[-1] + tile < width:
        lefts.append(width - tile)
    for top in tops:
        for left in lefts:
            bottom, right = min(top + tile, height), min(left + tile, width)
            patch = model.enhance(low[..., top:bottom, left:right], histeq=histeq[..., top:bottom, left:right], **kwargs)
            ramp_y = _ramp(bottom - top, overlap, top > 0, bottom < height).to(low)
            ramp_x = _ramp(right - left, overlap, left > 0, right < width).to(low)
            w = ramp_y[:, None] * ramp_x[None, :]
            out[..., top:bottom, left:right] += patch * w
            weight[..., top:bottom, left:right] += w
    return out / weight


def _ramp(size: int, overlap: int, fade_in: bool, fade_out: bool) -> torch.Tensor:
    ramp = torch.ones(size)
    if overlap:
        edge = torch.linspace(0, 1, overlap + 2)[1:-1]
        if fade_in:
            ramp[:overlap] = edge
        if fade_out:
            ramp[-overlap:] = edge.flip(0)
    return ramp


def _enhance(args: argparse.Namespace) -> int:
    from flowkit.data import read_image, write_image
    from flowkit.models.llflow.histeq import histeq_image

    device = _device(args.device)
    model = load_model(args.checkpoint, official=True if args.official else None, device=device)
    inputs = _inputs(args.inputs)
    if not inputs:
        print("flowkit enhance: no input images found", file=sys.stderr)
        return 2
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    protected = {p.resolve() for p in inputs}
    failures = 0
    generator = torch.Generator(device=device).manual_seed(args.seed)
    for path in _progress(inputs, "enhance"):
        try:
            low = read_image(path)[None].to(device)
            histeq = histeq_image(low)  # on the whole image, before any tiling
            for sample in range(args.samples):
                kwargs = {"temperature": args.temperature, "generator": generator}
                with torch.no_grad():
                    if args.tile and max(low.shape[-2:]) > args.tile:
                        result = enhance_tiled(model, low, histeq, args.tile, args.overlap, **kwargs)
                    else:
                        result = model.enhance(low, histeq=histeq, **kwargs)
                suffix = f"_{sample}" if args.samples > 1 else ""
                target = output / f"{path.stem}{suffix}.png"
                if target.resolve() in protected:
                    raise FileExistsError(f"refusing to overwrite the input {target}; choose another -o")
                write_image(target, result[0].clamp(0, 1).cpu())
        except (OSError, ValueError) as error:
            failures += 1
            print(f"flowkit enhance: {path}: {error}", file=sys.stderr)
    if failures:
        print(f"flowkit enhance: {failures} of {len(inputs)} inputs failed", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowkit", description="Train, evaluate and run LLFlow.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train LLFlow from a TOML config",
                                description="Train LLFlow. Under torchrun, trains with DDP on every process.")
    train.add_argument("--config", required=True, help="a TOML file, or a shipped config: lol, lol_small, lol_v2, tiny")
    train.add_argument("--resume", help="continue from this checkpoint (OUTPUT/last.pt)")
    train.add_argument("--output", help="run folder (overrides [run] output)")
    train.add_argument("--iterations", type=int, help="override [run] iterations")
    train.add_argument("--data-root", help="override [data] root (and turn off synthetic data)")
    train.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("evaluate", help="PSNR/SSIM table of a checkpoint on paired data",
                                   description="Evaluate a checkpoint on a paired dataset's test split.")
    evaluate.add_argument("--data", required=True, help="LOL / LOL-v2 / pair-folder root")
    evaluate.add_argument("--checkpoint", required=True, help="flowkit or reference checkpoint")
    evaluate.add_argument("--official", action="store_true", help="the checkpoint is the reference's")
    evaluate.add_argument("--split", default="test", choices=["train", "test"])
    evaluate.add_argument("--output", default="evaluation", help="folder for metrics.json and metrics.md")
    evaluate.add_argument("--device", choices=["cpu", "cuda"])
    evaluate.set_defaults(run=_evaluate)

    enhance = commands.add_parser("enhance", help="enhance low-light images",
                                  description="Enhance images (files or folders) and write PNGs.")
    enhance.add_argument("inputs", nargs="+", help="image files or folders")
    enhance.add_argument("-o", "--output", required=True, help="output folder")
    enhance.add_argument("--checkpoint", required=True, help="flowkit or reference checkpoint")
    enhance.add_argument("--official", action="store_true", help="the checkpoint is the reference's")
    enhance.add_argument("--temperature", type=float, default=0.0, help="0: the prior mean (deterministic)")
    enhance.add_argument("--samples", type=int, default=1, help="samples per image (with --temperature > 0)")
    enhance.add_argument("--seed", type=int, default=0, help="seed of the sampling")
    enhance.add_argument("--tile", type=int, default=0, help="enhance in tiles of this size (multiple of 8)")
    enhance.add_argument("--overlap", type=int, default=32, help="tile overlap in pixels")
    enhance.add_argument("--device", choices=["cpu", "cuda"])
    enhance.set_defaults(run=_enhance)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flowkit`` command with ``argv`` (default: the process's arguments).

    Example:
        >>> from flowkit.cli import build_parser
        >>> build_parser().parse_args(["enhance", "a.png", "-o", "out", "--checkpoint", "c.pt"]).tile
        0
    """
    args = build_parser().parse_args(argv)
    if getattr(args, "samples", 1) < 1:
        print("flowkit enhance: --samples must be >= 1", file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError) as error:
        # Bad input (a missing checkpoint, a broken config, an unpaired dataset): say what, no traceback.
        print(f"flowkit {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
