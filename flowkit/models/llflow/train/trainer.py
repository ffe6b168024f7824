"""The LLFlow training loop: one process or many (``torchrun`` + DDP), resumable bit for bit."""

from __future__ import annotations

import csv
import dataclasses
import json
import signal
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from flowkit.models.llflow import LLFlow, pretrained
from flowkit.models.llflow._files import write_atomically
from flowkit.models.llflow.checkpoint import (
    MODEL_FORMAT,
    capture_rng_state,
    load_checkpoint,
    model_weights,
    remove_stale_temporaries,
    restore_rng_state,
    save_checkpoint,
    save_model,
)
from flowkit.models.llflow.config import LLFlowConfig
from flowkit.models.llflow.data import (
    CombinedDataset,
    PairedImageDataset,
    SyntheticPairDataset,
    write_image,
    write_scenes,
    write_synthetic_pairs,
)
from flowkit.models.llflow.data.pairs import image_files
from flowkit.models.llflow.metrics import psnr, ssim
from flowkit.models.llflow.train.config import LossSection, TrainConfig
from flowkit.models.llflow.train.distributed import DistributedContext, init_distributed
from flowkit.models.llflow.train.ema import ExponentialMovingAverage
from flowkit.models.llflow.train.schedule import warmup_multistep

__all__ = ["TrainResult", "build_datasets", "emulated_autocast", "epoch_batches", "train", "validate"]


@dataclass
class TrainResult:
    """What a run did: its last step, logged losses, validations and last checkpoint.

    Every process of a run returns one.

    Args:
        step: the last step completed, counted from the start of training.
        losses: ``(step, loss)`` at every logged step, each process's own batch.
        validations: one dict per validation (rank 0 only): ``step`` and :func:`validate`'s means.
        skipped_steps: steps skipped for a non-finite loss or gradient norm (not fp16's scaler skips).
        checkpoint: the last checkpoint written (``OUTPUT/last.pt``), or ``None``.
        interrupted: the run stopped early on SIGINT or SIGTERM, after a checkpoint.
    """

    step: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    validations: list[dict[str, float]] = field(default_factory=list)
    skipped_steps: list[int] = field(default_factory=list)
    checkpoint: Path | None = None
    interrupted: bool = False


def epoch_batches(size: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """This rank's batches of dataset indices for ``epoch``: a seeded shuffle, split across ranks.

    A permutation drawn from ``(seed, epoch)`` only (so a resumed run recomputes it), cut into
    ``size // (batch_size * world)`` steps; rank ``r`` of ``world`` takes every ``world``-th index
    of each, so the ranks' batches never share an index.

    Example:
        >>> from flowkit.models.llflow.train.trainer import epoch_batches
        >>> a = epoch_batches(10, 2, seed=0, epoch=0, rank=0, world=2)
        >>> b = epoch_batches(10, 2, seed=0, epoch=0, rank=1, world=2)
        >>> len(a), sorted(sum(a, []) + sum(b, [])) == sorted(set(sum(a, []) + sum(b, [])))
        (2, True)
    """
    if batch_size < 1 or world < 1 or not 0 <= rank < world:
        raise ValueError(f"epoch_batches needs batch_size >= 1 and 0 <= rank < world, got batch_size={batch_size}, "
                         f"rank={rank}, world={world}")
    per_step = batch_size * world
    if size < per_step:
        raise ValueError(
            f"the training set has {size} pairs, fewer than one step needs "
            f"(batch_size {batch_size} x {world} processes)"
        )
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    steps = size // per_step
    return [order[s * per_step : (s + 1) * per_step][rank::world] for s in range(steps)]


def _synthesise(config: TrainConfig, output: Path, ctx: DistributedContext) -> tuple[Any, Any]:
    data = config.data
    source, val_source = data.path(data.synthetic_source), data.path(data.synthetic_val_source)
    synthesizer = data.low_light_synthesizer()
    root = output / "synthetic"
    train_dir, val_dir = root / "train", root / "val"
    if ctx.is_main and not (root / "done").exists():
        seed = config.run.seed
        if source == "scenes":
            size = data.synthetic_size
            for folder, count, offset in ((train_dir, data.synthetic_count, 0), (val_dir, data.synthetic_val_count, 1)):
                scenes = root / f"scenes_{folder.name}"
                write_scenes(scenes, count, size, size, seed=seed + offset)
                write_synthetic_pairs(scenes, folder, seed=seed + offset, multiple_of=8, overwrite=True,
                                      synthesizer=synthesizer)
        elif val_source is not None:
            # Validation pairs from their own photographs, degraded once with a seed of their own.
            write_synthetic_pairs(val_source, val_dir, seed=seed + 1, multiple_of=8, recursive=True,
                                  overwrite=True, limit=data.synthetic_val_count or None, synthesizer=synthesizer)
            if not data.synthetic_online:
                write_synthetic_pairs(source, train_dir, seed=seed, multiple_of=8, recursive=True, overwrite=True,
                                      limit=data.synthetic_count, synthesizer=synthesizer)
        else:
            # Online training darkens the photographs itself: only the validation pairs are written.
            online_val = data.synthetic_online and data.synthetic_val_count > 0
            limit = data.synthetic_val_count if online_val else data.synthetic_count + data.synthetic_val_count
            pairs = write_synthetic_pairs(
                source, root / "all", seed=seed, multiple_of=8, limit=limit,
                recursive=True, overwrite=True, synthesizer=synthesizer,
            )
            _move_pairs(pairs[: data.synthetic_val_count], val_dir)
            _move_pairs(pairs[data.synthetic_val_count :], train_dir)
        (root / "done").write_text("synthetic pairs complete\n")
    if ctx.enabled:
        dist.barrier()
    if data.synthetic_online:
        sources = source if isinstance(source, tuple) else (source,)
        photographs = [path for folder in sources for path in image_files(folder)]
        if val_source is None:
            # The first synthetic_val_count photographs (image_files' order, which the pairs
            # written above follow too) validate: training on them as well would make
            # validation meaningless.
            photographs = photographs[data.synthetic_val_count :]
        train_set = SyntheticPairDataset(photographs, synthesizer, **_train_kwargs(config))
    else:
        train_set = PairedImageDataset.from_root(train_dir, **_train_kwargs(config))
    return train_set, PairedImageDataset.from_root(val_dir, cache=data.cache)


def _move_pairs(pairs: list, folder: Path) -> None:
    for pair in pairs:
        for side, path in (("low", pair.low), ("high", pair.high)):
            (folder / side).mkdir(parents=True, exist_ok=True)
            path.replace(folder / side / path.name)


def _train_kwargs(config: TrainConfig) -> dict[str, Any]:
    data = config.data
    return {"patch_size": data.patch_size, "flip": data.flip, "seed": config.run.seed, "cache": data.cache}


def build_datasets(config: TrainConfig, output: Path, ctx: DistributedContext | None = None) -> tuple[Dataset, Dataset]:
    """The training and validation datasets that ``config``'s ``[data]`` section describes.

    Returns ``(train_set, val_set)``: random crops and flips with ``set_epoch``, and whole
    images. Synthesised pairs go to ``output/synthetic`` (written by rank 0 of ``ctx``), once.
    """
    ctx = ctx or DistributedContext()
    data = config.data
    if data.synthetic_source:
        train_set, val_set = _synthesise(config, output, ctx)
    elif data.train_low and data.train_high:
        train_low, train_high = data.path(data.train_low), data.path(data.train_high)
        train_set = PairedImageDataset.from_folders(train_low, train_high, **_train_kwargs(config))
        if data.val_low and data.val_high:
            val_set = PairedImageDataset.from_folders(data.path(data.val_low), data.path(data.val_high),
                                                      cache=data.cache)
        else:
            val_set = PairedImageDataset.from_folders(train_low, train_high, cache=data.cache)
    else:
        root = data.path(data.root)
        train_set = PairedImageDataset.from_root(root, "train", **_train_kwargs(config))
        val_set = PairedImageDataset.from_root(root, "test", cache=data.cache)
    if data.real_train:
        real = PairedImageDataset.from_root(data.path(data.real_train), **_train_kwargs(config))
        train_set = CombinedDataset([(train_set, 1), (real, data.real_train_repeat)])
    if data.val_limit:
        val_set = Subset(val_set, range(min(data.val_limit, len(val_set))))
    return train_set, val_set


class _Objective(nn.Module):
    """Routes a batch through ``LLFlow.loss`` inside ``forward``, so that DDP sees the call."""

    def __init__(self, model: nn.Module, selector: torch.Generator, loss: LossSection) -> None:
        super().__init__()
        self.model = model
        self.selector = selector
        self.terms = dataclasses.asdict(loss)  # LossSection's fields are LLFlow.loss's keywords

    def forward(self, low: Tensor, high: Tensor, histeq: Tensor) -> Tensor:
        return self.model.loss(low, high, histeq=histeq, generator=self.selector, **self.terms)


def _batches(dataset, config: TrainConfig, ctx: DistributedContext, start_step: int) -> Iterator[dict[str, Any]]:
    data, step = config.data, start_step
    per_epoch = len(dataset) // (data.batch_size * ctx.world_size)  # as epoch_batches cuts an epoch
    if per_epoch == 0:
        epoch_batches(len(dataset), data.batch_size, config.run.seed, 0, ctx.rank, ctx.world_size)  # raises, naming sizes
    while True:
        epoch, offset = divmod(step, per_epoch)
        dataset.set_epoch(epoch)
        batches = epoch_batches(len(dataset), data.batch_size, config.run.seed, epoch, ctx.rank, ctx.world_size)
        # The loader's own generator keeps it from drawing on the global RNG (worker seeds).
        loader = DataLoader(dataset, batch_sampler=batches[offset:], num_workers=data.num_workers,
                            generator=torch.Generator().manual_seed(config.run.seed + epoch))
        for batch in loader:
            yield batch
            step += 1


def emulated_autocast(amp: str, device: torch.device | str) -> str | None:
    """Why ``[run] amp`` would train slower than float32 on ``device``, or ``None`` where it would not.

    On a CPU, bfloat16 and float16 autocast are fast only where oneDNN has the instructions for
    them (AVX512-BF16 or AMX for bfloat16, AVX512-FP16 or AMX-FP16 for float16); elsewhere every
    low-precision convolution is emulated and a training step takes many times as long as in
    float32 (the model card's pilot has the numbers). :func:`~flowkit.models.llflow.train.train`
    warns with this message; GPUs are not checked.

    Args:
        amp: ``"none"``, ``"bf16"`` or ``"fp16"``, as in the config.
        device: where the run trains.

    Example:
        >>> from flowkit.models.llflow.train.trainer import emulated_autocast
        >>> emulated_autocast("none", "cpu") is None
        True
    """
    if amp == "none" or torch.device(device).type != "cpu":
        return None
    check = {"bf16": "_is_mkldnn_bf16_supported", "fp16": "_is_mkldnn_fp16_supported"}[amp]
    supported = getattr(torch.ops.mkldnn, check, None)
    if supported is None or supported():
        return None  # an unknown torch: assume nothing
    name = {"bf16": "bfloat16", "fp16": "float16"}[amp]
    return (f"[run] amp = {amp!r}: this CPU has no native {name} instructions, so {name} autocast is emulated "
            "and trains many times slower than float32; set [run] amp = 'none' here")


def _autocast(config: TrainConfig, device: torch.device):
    if config.run.amp == "none":
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if config.run.amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def _all_finite(value: Tensor, ctx: DistributedContext) -> bool:
    # Every rank must take the same decision, or the next collective would hang.
    flag = torch.tensor([1.0 if bool(torch.isfinite(value).all()) else 0.0], device=value.device)
    if ctx.enabled:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() == 1.0)


class _Logger:
    """Rank 0's CSV log, progress bar and (when installed) TensorBoard events."""

    def __init__(self, output: Path, total: int, start: int, enabled: bool, progress: bool) -> None:
        self.enabled = enabled
        self.bar = None
        self.board = None
        if not enabled:
            return
        output.mkdir(parents=True, exist_ok=True)
        new = not (output / "log.csv").exists() or start == 0
        # Open for the whole run and closed in close(): a context manager cannot span the loop.
        self.csv = open(output / "log.csv", "w" if new else "a", newline="")  # noqa: SIM115
        self.writer = csv.writer(self.csv)
        if new:
            self.writer.writerow(["step", "loss", "lr", "it_per_s", "kind"])
        if progress:
            self.bar = tqdm(total=total, initial=start, desc="train", dynamic_ncols=True, mininterval=1.0)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.board = SummaryWriter(str(output / "tensorboard"))
        except ImportError:  # tensorboard is optional
            pass

    def step(self, step: int, loss: float, lr: float, rate: float) -> None:
        if not self.enabled:
            return
        self.writer.writerow([step, f"{loss:.6f}", f"{lr:.6g}", f"{rate:.3f}", "train"])
        self.csv.flush()  # a killed run loses at most the row being written
        if self.board is not None:
            self.board.add_scalar("train/loss", loss, step)
            self.board.add_scalar("train/lr", lr, step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")

    def advance(self) -> None:
        if self.enabled and self.bar is not None:
            self.bar.update(1)

    def note(self, step: int, kind: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in values.items():
            self.writer.writerow([step, f"{value:.6f}", "", "", f"{kind}/{name}"])
            if self.board is not None:
                self.board.add_scalar(f"{kind}/{name}", value, step)
        self.csv.flush()
        if self.bar is not None:
            message = ", ".join(f"{k} {v:.4f}" for k, v in values.items())
            self.bar.write(f"step {step} {kind}: {message}")

    def close(self) -> None:
        if not self.enabled:
            return
        self.csv.close()
        if self.bar is not None:
            self.bar.close()
        if self.board is not None:
            self.board.close()


@torch.no_grad()
def validate(model: nn.Module, dataset, device: torch.device, image_path: Path | None = None, *,
             decode: Mapping[str, Any] = pretrained.MEAN_OF_PAIR) -> dict[str, float]:
    """Enhance every validation pair; mean PSNR and SSIM of the output and PSNR of the raw input.

    ``decode`` holds the ``temperature``, ``average`` and ``seed`` of the enhancement, seeded afresh
    for every image. By default it is the mean of an antithetic pair of decodes
    (:data:`~flowkit.models.llflow.pretrained.MEAN_OF_PAIR`), as flowkit's trained models enhance;
    runs before December 2026 scored the prior mean's decode (``temperature`` 0, ``average`` 1).

    Returns the means ``"psnr"``, ``"ssim"``, ``"input_psnr"`` and ``"nll"`` (bits per pixel,
    :meth:`~flowkit.models.LLFlow.nll`).

    ``image_path``, if given, receives the first pair as a grid low | enhanced | reference.
    """
    if len(dataset) == 0:
        raise ValueError("validate needs at least one validation pair, got an empty dataset")
    was_training = model.training
    model.eval()
    scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "input_psnr": [], "nll": []}
    for index in range(len(dataset)):
        item = dataset[index]
        low, high = item["low"][None].to(device), item["high"][None].to(device)
        histeq = item["histeq"][None].to(device) if "histeq" in item else None
        # Seeded per image, so that a score does not depend on the order of the pairs.
        generator = None if decode["seed"] is None else torch.Generator(device).manual_seed(decode["seed"])
        enhanced = model.enhance(low, histeq=histeq, temperature=decode["temperature"],
                                 average=decode["average"], generator=generator)
        scores["psnr"].append(float(psnr(enhanced, high)[0]))
        scores["ssim"].append(float(ssim(enhanced, high)[0]))
        scores["input_psnr"].append(float(psnr(low, high)[0]))
        scores["nll"].append(float(model.nll(low, high, histeq=histeq)[0]))
        if index == 0 and image_path is not None:
            write_image(image_path, torch.cat([low[0], enhanced[0], high[0]], dim=2).cpu())
    model.train(was_training)
    return {name: sum(values) / len(values) for name, values in scores.items()}


def train(
    config: TrainConfig,
    *,
    resume: str | Path | None = None,
    device: str | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train LLFlow as ``config`` says; under ``torchrun``, with DDP across the processes.

    Args:
        config: the run (see :class:`~flowkit.models.llflow.train.TrainConfig`).
        resume: ``OUTPUT/last.pt`` of an earlier run; the run then matches an uninterrupted one
            bit for bit on the same machine.
        device: ``"cpu"`` or ``"cuda"``; default CUDA when available.
        stop_after: stop (with a checkpoint) after this step, as if the run were interrupted.
        progress: show a progress bar.
    """
    ctx = init_distributed(device)
    output = Path(config.run.output)
    run = config.run
    slow = emulated_autocast(run.amp, ctx.device)
    if slow is not None and ctx.is_main:
        warnings.warn(slow, RuntimeWarning, stacklevel=2)
    torch.manual_seed(run.seed)  # identical initial weights on every rank
    model = LLFlow(config.llflow_config()).to(ctx.device)
    train_set, val_set = build_datasets(config, output, ctx)

    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.optim.lr, betas=tuple(config.optim.betas), weight_decay=config.optim.weight_decay
    )
    scheduler = warmup_multistep(optimizer, warmup=config.optim.warmup, milestones=config.optim.milestones,
                                 gamma=config.optim.gamma)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=run.amp == "fp16")
    # The same seed on every rank: all ranks pick the same prior for a step, one draw per global batch.
    selector = torch.Generator().manual_seed(run.seed)
    ema = ExponentialMovingAverage(model, config.optim.ema) if config.optim.ema else None

    step = 0
    if run.init is not None and resume is None:
        model.load_state_dict(_initial_weights(run.init, config, ctx.device))
    if ctx.is_main:
        remove_stale_temporaries(output)  # partial checkpoints of killed runs
    if resume is not None:
        state = load_checkpoint(resume, map_location=ctx.device)
        _check_resumable(state, resume, config)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None and "ema" in state:
            ema.shadow.load_state_dict(state["ema"])
        step = int(state["step"])
        selector.set_state(state["selector"][ctx.rank] if ctx.rank < len(state["selector"]) else state["selector"][0])
        restore_rng_state(state["rng"])

    batches = _batches(train_set, config, ctx, step)
    objective: nn.Module = _Objective(model, selector, config.loss)
    if step == 0:
        # ActNorm's data-dependent initialisation, from the first batch, before DDP takes over;
        # under torch.distributed the statistics are averaged over every rank's batch.
        first = next(_batches(train_set, config, ctx, 0))
        with torch.no_grad():
            model.loss(first["low"].to(ctx.device), first["high"].to(ctx.device),
                       histeq=first["histeq"].to(ctx.device), generator=torch.Generator().manual_seed(0))
        if ema is not None:
            # The average starts from the initialised model, not from ActNorm's placeholders.
            ema.shadow.load_state_dict(model.state_dict())
    if ctx.enabled:
        # The colour-map head is unused in steps that take the ground truth's prior.
        objective = nn.parallel.DistributedDataParallel(
            objective, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None,
            find_unused_parameters=True,
        )

    result = TrainResult(step=step)
    logger = _Logger(output, run.iterations, step, enabled=ctx.is_main, progress=progress)
    last_time, last_step = time.perf_counter(), step
    model.train()
    stop = _StopRequest()
    try:
        while step < run.iterations:
            batch = next(batches)
            low, high, histeq = (batch[k].to(ctx.device) for k in ("low", "high", "histeq"))
            if config.data.dequantize:  # the global generator, which checkpoints keep: resumes stay exact
                high = (high * 255 + torch.rand(high.shape, device=ctx.device)) / 256
            optimizer.zero_grad(set_to_none=True)
            with _autocast(config, ctx.device):
                loss = objective(low, high, histeq)
            step += 1
            if _all_finite(loss.detach(), ctx):
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                # The total norm serves the guard; an infinite bound clips nothing.
                norm = nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip or float("inf"))
                if run.amp == "fp16" or _all_finite(norm, ctx):
                    scaler.step(optimizer)  # with fp16 the scaler itself skips non-finite steps
                    scaler.update()
                    if ema is not None:
                        ema.update(model)
                else:
                    result.skipped_steps.append(step)
            else:
                result.skipped_steps.append(step)
                if ctx.is_main:
                    logger.note(step, "skipped", {"loss": float(loss.detach())})
            scheduler.step()
            logger.advance()

            if step % run.log_every == 0 or step == run.iterations:
                now = time.perf_counter()
                rate = (step - last_step) / max(now - last_time, 1e-9)
                last_time, last_step = now, step
                value = float(loss.detach())
                result.losses.append((step, value))
                logger.step(step, value, optimizer.param_groups[0]["lr"], rate)
            if step % run.val_every == 0 or step == run.iterations:
                if ctx.is_main:
                    evaluated = ema.shadow if ema is not None else model
                    scores = validate(evaluated, val_set, ctx.device, output / "images" / f"step_{step:06d}.png")
                    result.validations.append({"step": float(step), **scores})
                    logger.note(step, "val", scores)
                    _keep_best(output, step, evaluated, scores["psnr"])
                if ctx.enabled:
                    dist.barrier()
            result.interrupted = stop.requested(ctx)
            stopping = (stop_after is not None and step >= stop_after) or result.interrupted
            if step % run.checkpoint_every == 0 or step == run.iterations or stopping:
                result.checkpoint = _checkpoint(output, step, model, optimizer, scheduler, scaler, ema,
                                                selector, config, ctx)
            if stopping:
                break
    finally:
        stop.restore()
        logger.close()
    result.step = step
    return result


class _StopRequest:
    """Turns SIGINT and SIGTERM into a stop after the current step; a second one interrupts."""

    def __init__(self) -> None:
        self._flag = False
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for number in (signal.SIGINT, signal.SIGTERM):
            self._previous[number] = signal.signal(number, self._handle)

    def _handle(self, number: int, frame: Any) -> None:
        if self._flag:
            previous = self._previous.get(number)
            signal.signal(number, previous if previous is not None else signal.SIG_DFL)
            signal.raise_signal(number)
            return
        self._flag = True

    def requested(self, ctx: DistributedContext) -> bool:
        flag = self._flag
        if ctx.enabled:  # every rank stops at the same step, or the next collective would hang
            value = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
            flag = bool(value.item() > 0)
        return flag

    def restore(self) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()


def _initial_weights(init: str, config: TrainConfig, device: torch.device) -> dict[str, Tensor]:
    """The weights ``[run] init`` names: a shipped model or a checkpoint's (EMA) weights."""
    if init in pretrained.PRETRAINED:
        source = LLFlow.from_pretrained(init)
        state, saved = source.state_dict(), _plain(source.config)
    else:
        if not Path(init).is_file():
            raise FileNotFoundError(
                f"[run] init {init}: neither a checkpoint file nor a shipped model {pretrained.pretrained_names()}"
            )
        state, saved = model_weights(load_checkpoint(init, map_location=device), f"[run] init {init}")
    if differing := _config_difference(saved, config, ignore=_NOT_IN_WEIGHTS):
        raise ValueError(f"[run] init {init} has another model config than [model] (differs in {differing})")
    return state


# The LLFlowConfig fields that shape no weight: a fine-tune may change them (a floor of the coupling
# scale, the training prior's mix, the backpropagation mode), so [run] init does not compare them.
_NOT_IN_WEIGHTS = frozenset({"affine_eps", "train_gt_ratio", "memory"})


def _config_difference(saved: dict[str, Any], config: TrainConfig, ignore: frozenset[str] = frozenset()) -> list[str]:
    """The model-config fields, less ``ignore``, where a checkpoint's ``saved`` config and ``config``'s differ."""
    wanted = _plain(config.llflow_config())
    # Fields added to LLFlowConfig after the checkpoint was written take their defaults.
    saved = {**_plain(LLFlowConfig()), **saved}
    known = {f.name for f in dataclasses.fields(LLFlowConfig)}
    return sorted(k for k in set(saved) | set(wanted)
                  if k not in ignore and (k not in known or saved.get(k) != wanted.get(k)))


def _check_resumable(state: dict[str, Any], path: str | Path, config: TrainConfig) -> None:
    """A checkpoint resumes a run only if it is a training checkpoint of the same model config."""
    if state.get("format") == MODEL_FORMAT or "optimizer" not in state or "step" not in state:
        raise ValueError(
            f"{path} is not a training checkpoint (it holds no optimiser state or step; a model saved for "
            "enhancement cannot resume a run): pass OUTPUT/last.pt of the run to resume"
        )
    if differing := _config_difference(dict(state.get("llflow_config") or {}), config):
        raise ValueError(
            f"{path} was written by a run with another model config (differs in {differing}); resume it with "
            "the config that wrote it"
        )


def _keep_best(output: Path, step: int, model: nn.Module, psnr: float) -> None:
    """Save ``model`` as ``best.pt`` when ``psnr`` beats the validation PSNR that ``best.json`` records.

    The record lives in a file beside the weights, not in the run's state, so that a resumed run
    (even one from before this file existed) keeps the best weights of all its stretches.
    """
    record = output / "best.json"
    if record.exists() and json.loads(record.read_text())["psnr"] >= psnr:
        return
    save_model(model, output / "best.pt")
    write_atomically(record, (json.dumps({"step": step, "psnr": psnr}) + "\n").encode())


def _checkpoint(output, step, model, optimizer, scheduler, scaler, ema, selector, config, ctx) -> Path:
    selectors = [selector.get_state()]
    if ctx.enabled:
        gathered: list[Any] = [None] * ctx.world_size
        dist.all_gather_object(gathered, selector.get_state())
        selectors = gathered
    path = output / "last.pt"
    if ctx.is_main:
        state = {
            "format": "flowkit.models.llflow.train/1",
            "step": step,
            "model": model.state_dict(),
            "llflow_config": _plain(config.llflow_config()),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "selector": selectors,
            "rng": capture_rng_state(),
            "config": _plain(config.to_dict()),
        }
        if ema is not None:
            state["ema"] = ema.shadow.state_dict()
        save_checkpoint(state, path)
    if ctx.enabled:
        dist.barrier()
    return path


def _plain(value: Any) -> Any:
    """Dataclasses and tuples as dicts and lists, so the checkpoint loads with ``weights_only``."""
    if dataclasses.is_dataclass(value):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value

