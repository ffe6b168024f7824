"""The ``flowkit`` command: ``train``, ``evaluate`` and ``enhance`` LLFlow.

``python -m flowkit ...`` is the same command; ``torchrun --nproc_per_node N -m flowkit train ...``
trains on N processes.

Options are checked before any work starts; a mistake is one line naming the option (or the TOML
key and file). ``enhance`` writes ``OUTPUT/<stem>.png`` per input and never overwrites a file that
is not its own earlier output (without ``--overwrite``). ``train`` stops on SIGINT or SIGTERM after
the current step, with a checkpoint. :func:`main` lists the exit statuses.
"""

from __future__ import annotations

import argparse
import json
import math
import stat
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from flowkit.models import LLFlow, LLFlowConfig
from flowkit.models.llflow._files import write_atomically
from flowkit.models.llflow._weights import WeightsError, sha256_of
from flowkit.models.llflow.checkpoint import load_checkpoint, model_weights
from flowkit.models.llflow.data import IMAGE_SUFFIXES, PairedImageDataset, read_image, write_image
from flowkit.models.llflow.histeq import histeq_image
from flowkit.models.llflow.metrics import SCORE_COLUMNS, score_enhancement
from flowkit.models.llflow.pretrained import DEFAULT_PRETRAINED, MEAN_OF_PAIR, PRETRAINED, read_exported
from flowkit.models.llflow.train import load_config, train
from flowkit.models.llflow.train.config import shipped_configs

__all__ = ["load_model", "main"]

# Marks flowkit's own enhanced PNGs with the input they came from (a PNG text chunk), so a rerun
# may replace them while any other file of the same name is left alone.
SOURCE_KEY = "flowkit-input"


def load_model(checkpoint: str | Path, *, official: bool | None = None, device: str = "cpu", ema: bool = True):
    """An :class:`~flowkit.models.LLFlow` from a flowkit training checkpoint or a reference one.

    Returns the model in eval mode on ``device``; no code in the file runs. A flowkit checkpoint's
    model enhances as the shipped ones do (:data:`~flowkit.models.llflow.pretrained.MEAN_OF_PAIR`),
    a reference checkpoint's as the reference does.

    Args:
        checkpoint: a flowkit training checkpoint (``OUTPUT/last.pt``), a file of
            :func:`~flowkit.models.llflow.checkpoint.save_model`, a ``.safetensors`` file of
            :func:`~flowkit.models.llflow.pretrained.export_pretrained` (the form flowkit ships its
            models in), or a reference state dict.
        official: ``None`` tells the kinds apart by their keys; ``True`` demands a reference
            checkpoint, ``False`` a flowkit one.
        device: the device the model is moved to.
        ema: take a flowkit checkpoint's EMA weights when it has them.

    Example:
        >>> from flowkit.models.llflow.cli import load_model
        >>> load_model("missing.pt")
        Traceback (most recent call last):
        ...
        FileNotFoundError: no checkpoint at missing.pt
    """
    if Path(checkpoint).suffix.lower() == ".safetensors":
        path = Path(checkpoint)
        if official:
            raise ValueError(f"{path} is a flowkit safetensors file, not a reference checkpoint: leave out --official")
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        # Self-describing (the config is in its metadata); no digest to check it against but its own.
        model = read_exported(path, sha256_of(path.read_bytes()), model_class=LLFlow)
        model.enhance_defaults = dict(MEAN_OF_PAIR)
        return model.to(device).eval()
    state = load_checkpoint(checkpoint)
    is_flowkit = "llflow_config" in state or str(state.get("format", "")).startswith("flowkit.")
    if official and is_flowkit:
        raise ValueError(f"{checkpoint} is a flowkit checkpoint, not a reference one: leave out --official")
    if official or (official is None and not is_flowkit):
        return LLFlow.from_official(state).to(device).eval()
    weights, config = model_weights(state, str(checkpoint), ema=ema)
    config = dict(config, stack_blocks=tuple(config.get("stack_blocks", ())))
    try:
        model = LLFlow(LLFlowConfig(**config))
        model.load_state_dict(weights)
    except (TypeError, RuntimeError) as error:
        raise ValueError(f"{checkpoint}: its weights do not match its model config ({error})") from error
    model.enhance_defaults = dict(MEAN_OF_PAIR)
    return model.to(device).eval()


def _model_for(args: argparse.Namespace, device: str):
    """The model a command runs: ``--checkpoint`` when given, else the shipped ``--pretrained`` one."""
    if args.checkpoint:
        model = load_model(args.checkpoint, official=True if args.official else None, device=device)
        _note(args, f"using the checkpoint {args.checkpoint}")
        return model, str(args.checkpoint)
    if args.official:
        raise ValueError("--official needs --checkpoint (the reference checkpoint to convert)")
    name = args.pretrained or DEFAULT_PRETRAINED
    model = LLFlow.from_pretrained(name).to(device)
    _note(args, f"using the shipped model {name!r} (trained on synthetic low-light pairs; pass --checkpoint "
                "to use your own)")
    return model, f"pretrained:{name}"


def _note(args: argparse.Namespace, message: str) -> None:
    print(f"flowkit {args.command}: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------- option checking
def _number(kind, expected: str, accept):
    """An argparse type: ``kind(text)`` if ``accept`` holds for it, else a one-line error saying ``expected``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    return parse


_positive_int = _number(int, "a positive integer", lambda value: value >= 1)
_non_negative_int = _number(int, "an integer >= 0", lambda value: value >= 0)
_temperature = _number(float, "a finite number >= 0", lambda value: math.isfinite(value) and value >= 0)
_stops = _number(float, "a finite number of stops such as 0.5 or -1", math.isfinite)


def _device(name: str | None) -> str:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (use --device cpu)")
    if name:
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def _folder_option(option: str, value: str | None) -> None:
    if value is not None and Path(value).exists() and not Path(value).is_dir():
        raise ValueError(f"{option} {value}: is a file, expected a folder")


def _write_text(path: Path, text: str) -> None:
    write_atomically(path, text.encode())


# --------------------------------------------------------------------------------------- train
def _train(args: argparse.Namespace) -> int:
    _folder_option("--output", args.output)
    device = _device(args.device)
    if args.resume and not Path(args.resume).is_file():
        raise FileNotFoundError(f"--resume {args.resume}: no such checkpoint file")
    config = load_config(args.config)
    if args.output:
        config.run.output = args.output
    if args.iterations:
        config.run.iterations = args.iterations
    if args.init:
        config.run.init = args.init
    if args.data_root:
        config.data.root = args.data_root
        config.data.synthetic_source = None
    if args.data_dir:
        config.data.base = args.data_dir
    _folder_option("[run] output", config.run.output)
    with warnings.catch_warnings():
        # A warning during a run (a slow autocast, say) is one line, not a source excerpt.
        warnings.showwarning = lambda message, *_: _note(args, str(message))
        result = train(config, resume=args.resume, device=device, progress=not args.no_progress)
    if result.interrupted:
        _note(args, f"interrupted at step {result.step}; checkpoint written to {result.checkpoint} "
                    f"(continue with --resume {result.checkpoint})")
        return 130
    if result.validations:
        last = result.validations[-1]
        print(f"step {result.step}: PSNR {last['psnr']:.2f} dB (input {last['input_psnr']:.2f} dB), "
              f"SSIM {last['ssim']:.4f}, NLL {last['nll']:.3f}")
    return 0


# ------------------------------------------------------------------------------------ evaluate
def _evaluate(args: argparse.Namespace) -> int:
    _folder_option("--output", args.output)
    device = _device(args.device)
    data = PairedImageDataset.from_root(args.data, args.split)
    model, source = _model_for(args, device)
    rows: list[dict[str, Any]] = []
    columns = list(SCORE_COLUMNS)
    with torch.no_grad():
        for index in _Progress(range(len(data)), "evaluate"):
            item = data[index]
            low, high = item["low"][None].to(device), item["high"][None].to(device)
            raw = model.enhance(low, histeq=item["histeq"][None].to(device), clamp=False)
            scores = score_enhancement(raw, high)
            # LPIPS's AlexNet needs 32x32 pixels at least; smaller images get no value (null, "n/a").
            rows.append({"name": item["name"]} | {c: float(scores[c][0]) if c in scores else None for c in columns})
    mean = {c: _mean([r[c] for r in rows]) for c in columns}
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    report = {"model": source, "data": str(args.data), "split": args.split, "images": rows, "mean": mean}
    _write_text(output / "metrics.json", json.dumps(report, indent=2) + "\n")
    table = _markdown([*rows, {"name": "**mean**", **mean}], columns)
    _write_text(output / "metrics.md", (
        f"Model: {source}. Columns (flowkit.models.llflow.metrics.score_enhancement): `psnr`, `ssim` (Gaussian, RGB) and "
        "`lpips` (AlexNet v0.1) of the saved 8-bit image; `gtmean_*` the same after GT-mean brightness "
        "alignment; `paper_*` LLFlow's test.py protocol (uint8 truncation, the published gray SSIM), "
        "`paper_gtmean_*` with its GT-mean rescale, as the reference's published numbers.\n\n" + table
    ))
    print(table)
    return 0


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| image | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in rows:
        cells = ("n/a" if row[c] is None else f"{row[c]:.4f}" for c in columns)
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


class _Progress:
    """A progress bar on stderr whose messages get lines of their own."""

    def __init__(self, items, desc: str) -> None:
        self.bar = tqdm(items, desc=desc, dynamic_ncols=True, file=sys.stderr)

    def __iter__(self):
        return iter(self.bar)

    def write(self, message: str) -> None:
        self.bar.write(message, file=sys.stderr)


# ------------------------------------------------------------------------------------- enhance
def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)  # follows links; a loop raises
    except OSError:
        return False


def _inputs(paths: Sequence[str]) -> tuple[list[Path], list[str]]:
    """The images to enhance (files given, and image files one level inside folders), and notes on what was skipped."""
    found: list[Path] = []
    skipped: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            try:
                entries = sorted(path.iterdir())
            except OSError as error:
                skipped.append(f"{path}: cannot list the folder ({error.strerror or error}); skipped")
                continue
            for entry in entries:
                if entry.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                if _is_regular(entry):
                    found.append(entry)
                elif not entry.is_dir():
                    skipped.append(f"{entry}: not a regular file (a FIFO, socket, device or broken link); skipped")
        else:
            found.append(path)  # a missing or special file is reported when it is read
    return found, skipped


def _targets(inputs: list[Path], output: Path) -> dict[Path, Path]:
    """``OUTPUT/<stem>.png`` per input; refuses two inputs with the same output name."""
    targets = {path: output / f"{path.stem}.png" for path in inputs}
    seen: dict[Path, Path] = {}
    for path, target in targets.items():
        if target in seen:
            raise ValueError(f"{seen[target]} and {path} would both be written to {target}; "
                             "enhance them into different folders")
        seen[target] = path
    return targets


def _written_for(target: Path) -> str | None:
    """The input a PNG in the output folder was enhanced from, if flowkit wrote it."""
    try:
        with Image.open(target) as image:
            return getattr(image, "text", {}).get(SOURCE_KEY)
    except Exception:  # any unreadable or foreign file: not flowkit's
        return None


def _enhance(args: argparse.Namespace) -> int:
    if args.tile and (args.tile % 8 or args.tile <= 2 * args.overlap):
        raise ValueError(f"--tile must be 0 (off) or a multiple of 8 larger than twice --overlap "
                         f"({args.overlap}), got {args.tile}")  # checked before any image is read
    _folder_option("-o/--output", args.output)
    device = _device(args.device)
    inputs, skipped = _inputs(args.inputs)
    for warning in skipped:
        _note(args, warning)
    if not inputs:
        raise FileNotFoundError("no input images found in " + ", ".join(args.inputs))
    inputs = list(dict.fromkeys(inputs))  # a file named twice is enhanced once
    output = Path(args.output)
    names = _targets(inputs, output)
    model, _ = _model_for(args, device)
    temperature = model.enhance_defaults["temperature"] if args.temperature is None else args.temperature
    if args.samples > 1 and temperature == 0:
        raise ValueError("--samples > 1 needs --temperature > 0 (at temperature 0 every sample is the same)")
    if args.average is not None and args.average > 1 and temperature == 0:
        raise ValueError("--average > 1 needs --temperature > 0 (at temperature 0 every decode is the same)")
    output.mkdir(parents=True, exist_ok=True)
    protected = {p.resolve() for p in inputs}
    failures = 0
    progress = _Progress(inputs, "enhance")
    for path in progress:
        base = names[path]
        try:
            if not _is_regular(path):
                raise FileNotFoundError(f"{path}: no such file" if not path.exists() and not path.is_symlink()
                                        else f"{path}: not a regular file")
            source = str(path.resolve())
            targets = [base.with_name(f"{base.stem}_{i}.png") if args.samples > 1 else base
                       for i in range(args.samples)]
            for target in targets:
                if target.resolve() in protected:
                    raise FileExistsError(f"refusing to overwrite the input {target}; choose another -o")
                if target.exists() and not args.overwrite and _written_for(target) != source:
                    raise FileExistsError(f"{target} exists and is not flowkit's output for {path}; "
                                          "pass --overwrite to replace it")
            low = read_image(path)[None].to(device)
            histeq = histeq_image(low)  # once per image, not once per sample
            # A generator per image: its output does not depend on the other inputs or their order.
            generator = torch.Generator(device=device).manual_seed(args.seed)
            for target in targets:
                with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", RuntimeWarning)
                    result = model.enhance(low, histeq=histeq, temperature=args.temperature, average=args.average,
                                           generator=generator, precision=args.precision, exposure=args.exposure,
                                           tile=args.tile or None, overlap=args.overlap)
                for warning in caught:  # a decode that diverged: one line naming the image, no source line
                    progress.write(f"flowkit enhance: {path}: {warning.message}")
                write_image(target, result[0].cpu(), text={SOURCE_KEY: source})
        except (OSError, ValueError) as error:
            failures += 1
            message = str(error)
            progress.write(f"flowkit enhance: {message if str(path) in message else f'{path}: {message}'}")
    if failures:
        _note(args, f"{failures} of {len(inputs)} inputs failed")
        return 1
    return 0


# ---------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """The ``flowkit`` argument parser (sub-commands ``train``, ``evaluate``, ``enhance``).

    Example:
        >>> from flowkit.models.llflow.cli import build_parser
        >>> build_parser().parse_args(["enhance", "a.png", "-o", "out"]).tile
        0
    """
    parser = argparse.ArgumentParser(prog="flowkit", description="Train, evaluate and run LLFlow.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train LLFlow from a TOML config",
                                description="Train LLFlow. Under torchrun, trains with DDP on every process. "
                                            "Ctrl-C stops after the current step with a checkpoint.")
    train.add_argument("--config", required=True,
                       help="a TOML file, or a shipped config: " + ", ".join(shipped_configs()))
    train.add_argument("--resume", help="continue from this checkpoint (OUTPUT/last.pt)")
    train.add_argument("--output", help="run folder (overrides [run] output)")
    train.add_argument("--iterations", type=_positive_int, help="override [run] iterations")
    train.add_argument("--init", help="start from these weights: a shipped model's name or a checkpoint "
                                      "(override [run] init)")
    train.add_argument("--data-root", help="override [data] root (and turn off synthetic data)")
    train.add_argument("--data-dir", help="override [data] base, the folder relative data paths are taken from")
    train.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("evaluate", help="PSNR/SSIM/LPIPS table of a model on paired data",
                                   description="Evaluate a model on a paired dataset's test split.")
    evaluate.add_argument("--data", required=True, help="LOL / LOL-v2 / pair-folder root")
    _model_options(evaluate)
    evaluate.add_argument("--split", default="test", choices=["train", "test"])
    evaluate.add_argument("--output", default="evaluation", help="folder for metrics.json and metrics.md")
    evaluate.set_defaults(run=_evaluate)

    enhance = commands.add_parser(
        "enhance", help="enhance low-light images",
        description="Enhance images (files, or the image files in folders) and write OUTPUT/<stem>.png. "
                    "Files that flowkit did not write for the same input are never replaced without --overwrite.")
    enhance.add_argument("inputs", nargs="+", help="image files or folders")
    enhance.add_argument("-o", "--output", required=True, help="output folder")
    _model_options(enhance)
    default_temperature = PRETRAINED[DEFAULT_PRETRAINED].enhance_defaults["temperature"]  # follows the default
    enhance.add_argument("--temperature", type=_temperature,
                         help="latent temperature; 0: decode the prior mean, the reference's output "
                              f"(default: the model's own: {default_temperature:g} for {DEFAULT_PRETRAINED}, "
                              f"{MEAN_OF_PAIR['temperature']:g} for the older shipped models and flowkit's checkpoints, "
                              "0 for reference checkpoints)")
    enhance.add_argument("--average", type=_positive_int,
                         help="decodes averaged per image, in antithetic pairs (default: 1 with --temperature, "
                              "else the model's: 2 for flowkit's models)")
    enhance.add_argument("--samples", type=_positive_int, default=1,
                         help="samples per image (with --temperature > 0), written as <stem>_<i>.png")
    enhance.add_argument("--seed", type=int, default=0,
                         help="seed of each image's sampling (every image starts from it, so an image's output "
                              "does not depend on the other inputs)")
    enhance.add_argument("--tile", type=_non_negative_int, default=0,
                         help="enhance in tiles of this size (a multiple of 8; 0: whole images)")
    enhance.add_argument("--overlap", type=_non_negative_int, default=32, help="tile overlap in pixels")
    enhance.add_argument("--overwrite", action="store_true",
                         help="replace existing files in the output folder that flowkit did not write for these inputs")
    enhance.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                         help="bfloat16: convolutions under autocast, about 1.5x faster on CPUs with AMX or "
                              "AVX512-BF16 and within 0.007 of the float32 image (default float32)")
    enhance.add_argument("--exposure", type=_stops, metavar="STOPS",
                         help="brighten (> 0) or darken (< 0) the model's result by this many stops (EV), "
                              "keeping hue and highlights (default: the model's own exposure)")
    enhance.set_defaults(run=_enhance)
    return parser


def _model_options(command: argparse.ArgumentParser) -> None:
    """The options that pick the model a command runs, and its device."""
    command.add_argument("--checkpoint", help="flowkit or reference checkpoint (default: the shipped model)")
    command.add_argument("--pretrained", metavar="NAME", help=f"which shipped model (default: {DEFAULT_PRETRAINED})")
    command.add_argument("--official", action="store_true", help="the checkpoint is the reference's")
    command.add_argument("--device", choices=["cpu", "cuda"])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flowkit`` command with ``argv`` (default: the process's arguments); returns the exit status.

    0: success; 1: some inputs failed (each reported); 2: a usage or input mistake (one line);
    3: an internal error (a bug: the traceback follows); 130: interrupted. Arguments argparse
    rejects end in ``SystemExit(2)`` instead, and ``--help`` in ``SystemExit(0)``.

    Example:
        >>> from flowkit.models.llflow.cli import main
        >>> main(["enhance", "no-such-image.png", "-o", "out", "--tile", "12"])
        2
    """
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        _note(args, "interrupted")
        return 130
    except (FileNotFoundError, FileExistsError, ValueError, WeightsError) as error:
        # A user mistake (missing file, bad config or option, unpaired data): say what, no traceback.
        _note(args, str(error))
        return 2
    except OSError as error:  # the system refused (a full disk, permissions): name the file
        if error.filename is not None:
            _note(args, f"{error.filename}: {error.strerror}")
        else:
            _note(args, error.strerror or str(error))
        return 1
    except Exception:
        _note(args, "internal error (a bug in flowkit; please report it with the traceback below)")
        traceback.print_exc()
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
