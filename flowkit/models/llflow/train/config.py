"""Training configuration: a TOML file read into typed, validated sections."""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowkit.models.llflow.config import LLFlowConfig
from flowkit.models.llflow.data import LowLightMixture, LowLightSynthesizer
from flowkit.models.llflow.model import DECODE_DISTANCES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["DataSection", "LossSection", "OptimSection", "RunSection", "TrainConfig", "load_config", "shipped_configs"]

CONFIG_DIR = Path(__file__).parent / "configs"
SYNTHESIZER_PRESETS = {"default": LowLightSynthesizer, "lol": LowLightSynthesizer.lol,
                       "lol_wide": LowLightSynthesizer.lol_wide}
# The ranges a mild share may set (``[data] synthesizer_mild_<name>``); the preset's others are kept.
_MILD_RANGES = ("gamma", "scale", "red_gain", "blue_gain")


@dataclass
class DataSection:
    """Where the training pairs come from and how they are batched.

    The training pairs come from, in order of precedence: ``synthetic_source``,
    ``train_low``/``train_high``, or ``root`` (its train split trains, its test split validates).

    Args:
        root: a LOL / LOL-v2 / pair-folder root (:func:`~flowkit.models.llflow.data.find_pairs`).
        train_low, train_high: folders of training images, paired by name.
        val_low, val_high: validation folders for a run that names its training folders (else the
            training folders validate, on whole images).
        synthetic_source: a folder of normal-light photographs (searched recursively), or
            ``"scenes"`` for generated scenes, to synthesise pairs from, once, under
            ``OUTPUT/synthetic``; with ``synthetic_online``, possibly a list of folders.
        synthetic_count: how many training pairs are written; ignored with ``synthetic_online``.
        synthetic_size: height and width of the generated scenes, at least ``patch_size``.
        synthetic_val_count: validation pairs synthesised (scenes, photographs held out of
            ``synthetic_source``, or at most that many of ``synthetic_val_source``; 0: all).
        patch_size: side of the square training crops, a positive multiple of 8.
        batch_size: pairs per step and process.
        flip: flip training crops left-right at random.
        num_workers: DataLoader worker processes (0 loads in the training process).
        cache: keep decoded images in memory.
        val_limit: validate on the first this many pairs only (0: all).
        synthesizer: ``"default"``, ``"lol"`` or ``"lol_wide"``, a
            :class:`~flowkit.models.llflow.data.LowLightSynthesizer` preset.
        synthesizer_gamma, synthesizer_scale: ``[low, high]`` ranges that replace the preset's
            gamma and exposure-scale ranges (``None``: the preset's). A preset fitted to LOL
            darkens every photograph to LOL's 1-12% of full scale, so a model trained on it alone
            brightens whatever it is given to the same level; ranges reaching milder darkening
            (gamma near 1, scale near 1) teach it to lift a dim input less than a dark one.
        synthesizer_mild_fraction: the share of photographs, in ``[0, 1)``, darkened with a second,
            milder pair of ranges instead; the rest keep the preset's darkening (a
            :class:`~flowkit.models.llflow.data.LowLightMixture`). Widened ranges spread the draws
            evenly from LOL-like darkness to mild dimming; this keeps a chosen share at the former.
        synthesizer_mild_gamma, synthesizer_mild_scale: the second pair's ``[low, high]`` gamma and
            scale ranges (the preset's other ranges are kept); both are needed when
            ``synthesizer_mild_fraction`` is above 0, and neither is allowed when it is 0.
        synthesizer_mild_red_gain, synthesizer_mild_blue_gain: optional ``[low, high]`` ranges of
            the mild share's colour gains relative to green (``None``: the preset's). LOL's
            camera darkens red and blue unevenly, and a model that only ever sees that may learn
            to correct a cast that a bright, neutral photograph does not have; ``[1, 1]`` darkens
            without a cast.
        synthetic_online: darken the photographs afresh for every item and epoch
            (:class:`~flowkit.models.llflow.data.SyntheticPairDataset`) instead of once.
        synthetic_val_source: a folder of photographs for the validation pairs (``None``: from
            ``synthetic_source``).
        real_train: a pair folder or dataset root whose training pairs join the training set.
        real_train_repeat: how many times each ``real_train`` pair appears per epoch.
        base: the folder relative data paths are taken from (``None``: the current directory).
        dequantize: spread the normal-light images the loss sees over their 8-bit levels,
            ``(255 x + u) / 256`` with ``u ~ U[0, 1)``. The reference trains without it; with 8-bit targets
            the flow can then keep lowering its NLL by concentrating density on the 256 levels and
            on clipped highlights, a gain in likelihood that no enhancement reflects.
    """

    root: str | None = None
    train_low: str | None = None
    train_high: str | None = None
    val_low: str | None = None
    val_high: str | None = None
    synthetic_source: str | tuple[str, ...] | None = None
    synthetic_count: int = 64
    synthetic_size: int = 96
    synthetic_val_count: int = 8
    patch_size: int = 160
    batch_size: int = 16
    flip: bool = True
    num_workers: int = 0
    cache: bool = False
    val_limit: int = 0
    synthesizer: str = "default"
    synthesizer_gamma: tuple[float, float] | None = None
    synthesizer_scale: tuple[float, float] | None = None
    synthesizer_mild_fraction: float = 0.0
    synthesizer_mild_gamma: tuple[float, float] | None = None
    synthesizer_mild_scale: tuple[float, float] | None = None
    synthesizer_mild_red_gain: tuple[float, float] | None = None
    synthesizer_mild_blue_gain: tuple[float, float] | None = None
    synthetic_online: bool = False
    synthetic_val_source: str | None = None
    real_train: str | None = None
    real_train_repeat: int = 1
    base: str | None = None
    dequantize: bool = False

    def path(self, value: str | tuple[str, ...] | None) -> str | tuple[str, ...] | None:
        """``value`` (a path, a tuple of them, or ``None``) taken from ``base`` when relative.

        ``None``, ``"scenes"`` and absolute paths are returned unchanged.
        """
        if isinstance(value, tuple):
            return tuple(self.path(item) for item in value)
        if value is None or value == "scenes" or self.base is None or Path(value).is_absolute():
            return value
        return str(Path(self.base) / value)

    def low_light_synthesizer(self) -> LowLightSynthesizer | LowLightMixture:
        """The degradation that darkens the training photographs: a
        :class:`~flowkit.models.llflow.data.LowLightSynthesizer`, or with a mild share a
        :class:`~flowkit.models.llflow.data.LowLightMixture` of two.

        Example:
            >>> from flowkit.models.llflow.train import DataSection
            >>> DataSection(synthesizer="lol_wide", synthesizer_scale=(0.08, 0.7)).low_light_synthesizer().scale
            (0.08, 0.7)
            >>> mixture = DataSection(synthesizer="lol_wide", synthesizer_mild_fraction=0.25,
            ...                       synthesizer_mild_gamma=(1.0, 1.5), synthesizer_mild_scale=(0.5, 1.0)
            ...                       ).low_light_synthesizer()
            >>> mixture.weights, mixture.components[1].scale
            ((0.75, 0.25), (0.5, 1.0))
        """
        if self.synthesizer not in SYNTHESIZER_PRESETS:
            raise ValueError(
                f"[data] synthesizer must be one of {sorted(SYNTHESIZER_PRESETS)}, got {self.synthesizer!r}"
            )
        preset = SYNTHESIZER_PRESETS[self.synthesizer]()
        synthesizer = self._with_ranges(preset, "synthesizer_")
        fraction = self.synthesizer_mild_fraction
        mild_ranges = (self.synthesizer_mild_gamma, self.synthesizer_mild_scale)
        if not 0 <= fraction < 1:
            raise ValueError(f"[data] synthesizer_mild_fraction must be in [0, 1), got {fraction}")
        if fraction == 0:
            mild_keys = [f"synthesizer_mild_{name}" for name in _MILD_RANGES
                         if getattr(self, f"synthesizer_mild_{name}") is not None]
            if mild_keys:
                verb = "needs" if len(mild_keys) == 1 else "need"
                raise ValueError(f"[data] {' and '.join(mild_keys)} {verb} synthesizer_mild_fraction above 0, got 0")
            return synthesizer
        if None in mild_ranges:
            raise ValueError(f"[data] synthesizer_mild_fraction = {fraction} needs both synthesizer_mild_gamma "
                             f"and synthesizer_mild_scale, got {list(mild_ranges)}")
        mild = self._with_ranges(preset, "synthesizer_mild_", _MILD_RANGES)
        return LowLightMixture((synthesizer, mild), weights=(1 - fraction, fraction))

    def _with_ranges(self, synthesizer: LowLightSynthesizer, prefix: str,
                     names: tuple[str, ...] = ("gamma", "scale")) -> LowLightSynthesizer:
        # The ranges under these keys, each named in its own error.
        for name in names:
            value = getattr(self, prefix + name)
            if value is not None:
                try:
                    synthesizer = dataclasses.replace(synthesizer, **{name: value})
                except ValueError as error:
                    raise ValueError(f"[data] {prefix}{name}: {error}") from error
        return synthesizer


@dataclass
class OptimSection:
    """Adam with linear warm-up and step halving (the reference's effective settings).

    Args:
        lr: Adam's learning rate after the warm-up.
        betas: Adam's ``(beta1, beta2)``.
        weight_decay: Adam's L2 weight decay (not AdamW's decoupled decay).
        warmup: steps of linear warm-up from 0 (:func:`~flowkit.models.llflow.train.schedule.warmup_multistep`).
        milestones: the steps at which the rate is multiplied by ``gamma``.
        gamma: the factor applied at each milestone.
        grad_clip: the largest global gradient norm (0: no clipping); a non-finite norm skips the step.
        ema: decay of the weights' :class:`~flowkit.models.llflow.train.ema.ExponentialMovingAverage`
            (e.g. 0.999; 0: off), which validation uses.
    """

    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup: int = 0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.5
    grad_clip: float = 0.0
    ema: float = 0.0


@dataclass
class LossSection:
    """The training objective: the reference's likelihood, and an optional term on enhancements.

    Args:
        decode_weight: the weight ``w`` of the distance between the ground truth and the mean
            of an antithetic pair of sampled decodes, the image that enhancement returns
            (:meth:`~flowkit.models.LLFlow.loss`); 0, the reference's objective, leaves it out.
        decode_temperature: the temperature ``T`` of those decodes.
        decode_distance: ``"l1"`` (mean absolute error) or ``"l2"`` (mean squared error).

    Example:
        >>> from flowkit.models.llflow.train import LossSection
        >>> LossSection(decode_weight=4.0).decode_temperature
        1.0
    """

    decode_weight: float = 0.0
    decode_temperature: float = 1.0
    decode_distance: str = "l1"


@dataclass
class RunSection:
    """Length, precision, seeds and how often to validate, log and checkpoint.

    Args:
        iterations: the run's total optimiser steps (a resumed run continues up to it).
        amp: ``"none"`` (float32), ``"bf16"`` or ``"fp16"`` autocast (with a gradient scaler).
        seed: seeds the weights, data order, crops, flips, degradations and prior choices.
        val_every: validate every this many steps and after the last; the best-scoring weights
            (EMA when enabled) go to ``OUTPUT/best.pt``, their step and PSNR to ``best.json``.
        checkpoint_every: write ``OUTPUT/last.pt`` every this many steps, after the last and on a stop.
        log_every: record the loss every this many steps and after the last.
        output: the run's folder, relative to the current directory (not to ``[data] base``).
        init: start from trained weights instead of random ones (fine-tuning): the name of a
            shipped model (:func:`~flowkit.models.llflow.pretrained.pretrained_names`) or a flowkit
            checkpoint (a run's ``last.pt``, whose EMA weights are taken, or ``best.pt``), of the same
            model sizes; ``affine_eps``, ``train_gt_ratio`` and ``memory``, which shape no weight, come
            from ``[model]``. The optimiser, schedule and step start afresh; ``--resume`` overrides it.
    """

    iterations: int = 1000
    amp: str = "none"
    seed: int = 10
    val_every: int = 200
    checkpoint_every: int = 1000
    log_every: int = 10
    output: str = "runs/llflow"
    init: str | None = None


@dataclass
class TrainConfig:
    """A whole training run: the model preset and overrides, data, optimiser and run sections.

    A mistake raises a :class:`ValueError` naming the section and key.

    Args:
        model: the ``[model]`` table: ``preset`` (``"lol"``, ``"lol_small"`` (default),
            ``"lol_v2"`` or ``"tiny"``) and any :class:`~flowkit.models.LLFlowConfig` fields to override.
        data, optim, loss, run: the ``[data]``, ``[optim]``, ``[loss]`` and ``[run]`` sections.

    Example:
        >>> from flowkit.models.llflow.train import load_config
        >>> config = load_config("tiny")
        >>> config.model["preset"], config.run.iterations > 0
        ('tiny', True)
    """

    model: dict[str, Any] = field(default_factory=lambda: {"preset": "lol_small"})
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    run: RunSection = field(default_factory=RunSection)

    def __post_init__(self) -> None:
        if self.run.amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"[run] amp must be 'none', 'bf16' or 'fp16', got {self.run.amp!r}")
        for name in ("iterations", "val_every", "checkpoint_every", "log_every"):
            if getattr(self.run, name) < 1:
                raise ValueError(f"[run] {name} must be >= 1, got {getattr(self.run, name)}")
        if self.data.batch_size < 1 or self.data.patch_size < 8 or self.data.patch_size % 8:
            raise ValueError(
                "[data] needs batch_size >= 1 and a patch_size that is a positive multiple of 8, got "
                f"batch_size={self.data.batch_size}, patch_size={self.data.patch_size}"
            )
        self.data.low_light_synthesizer()  # raises on an unknown preset or a bad range
        if isinstance(self.data.real_train_repeat, bool) or not isinstance(self.data.real_train_repeat, int) \
                or self.data.real_train_repeat < 1:
            raise ValueError(f"[data] real_train_repeat must be a positive int, got {self.data.real_train_repeat!r}")
        source = self.data.synthetic_source
        if self.data.synthetic_online and (not source or source == "scenes" or "scenes" in source):
            raise ValueError("[data] synthetic_online needs synthetic_source to be a folder of photographs")
        if isinstance(source, tuple) and not self.data.synthetic_online:
            raise ValueError(f"[data] synthetic_source can be a list of folders only with synthetic_online, got {list(source)}")
        if isinstance(source, tuple) and not self.data.synthetic_val_source:
            raise ValueError("[data] a list of synthetic_source folders needs synthetic_val_source for validation")
        for name in ("decode_weight", "decode_temperature"):
            if not math.isfinite(getattr(self.loss, name)) or getattr(self.loss, name) < 0:
                raise ValueError(f"[loss] {name} must be a finite number >= 0, got {getattr(self.loss, name)}")
        if self.loss.decode_distance not in DECODE_DISTANCES:
            raise ValueError(f"[loss] decode_distance must be one of {sorted(DECODE_DISTANCES)}, "
                             f"got {self.loss.decode_distance!r}")
        has_folders = self.data.train_low is not None and self.data.train_high is not None
        if not (self.data.root or has_folders or self.data.synthetic_source):
            raise ValueError("[data] needs root, train_low + train_high, or synthetic_source")

    def llflow_config(self):
        """The :class:`~flowkit.models.LLFlowConfig` this run trains."""
        overrides = dict(self.model)
        preset = overrides.pop("preset", "lol_small")
        presets = {"lol": LLFlowConfig.lol, "lol_small": LLFlowConfig.lol_small,
                   "lol_v2": LLFlowConfig.lol_v2, "tiny": _tiny_llflow}
        if preset not in presets:
            raise ValueError(f"[model] preset must be one of {sorted(presets)}, got {preset!r}")
        known = {f.name for f in dataclasses.fields(LLFlowConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"[model] has unknown keys {unknown}; known keys: {sorted(known | {'preset'})}")
        if isinstance(overrides.get("stack_blocks"), list):
            overrides["stack_blocks"] = tuple(overrides["stack_blocks"])
        try:
            return dataclasses.replace(presets[preset](), **overrides)
        except ValueError as error:
            raise ValueError(f"[model] {str(error).removeprefix('LLFlowConfig.')}") from error

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _tiny_llflow():
    return dataclasses.replace(
        LLFlowConfig.lol_small(), encoder_channels=16, encoder_blocks=2, growth_channels=8,
        stack_blocks=(1,), steps_per_level=2, hidden_channels=16,
    )


def _section(cls, table: dict[str, Any], name: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"[{name}] has unknown keys {unknown}; known keys: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    return cls(**{key: _typed(value, hints[key], f"[{name}] {key}") for key, value in table.items()})


def _typed(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against a field's type hint (TOML gives str, int, float, bool, lists)."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return value
    for option in options:
        if option is type(None):
            continue
        if typing.get_origin(option) is tuple:
            items = typing.get_args(option)
            if isinstance(value, (list, tuple)) and (items[-1] is Ellipsis or len(value) == len(items)):
                try:
                    return tuple(_typed(v, items[0], where) for v in value)
                except ValueError:
                    pass  # reported below for the whole list
            continue
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
    expected = " or ".join(_type_name(o) for o in options if o is not type(None))
    raise ValueError(f"{where} must be {expected}, got {value!r} ({_toml_type(value)})")


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        items = typing.get_args(hint)
        plural = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}.get(items[0], str(items[0]))
        return f"a list of {plural}" if items[-1] is Ellipsis else f"a list of {len(items)} {plural}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _toml_type(value: Any) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a table"}
    return kinds.get(type(value), type(value).__name__)


def shipped_configs() -> list[str]:
    """Names of the configs shipped with flowkit.

    ``lol*`` are the reference's recipes; ``default``, ``synthetic_v2`` and ``synthetic_v4``
    trained the shipped models (see the model card), ``tiny`` trains in minutes on CPU.

    Example:
        >>> from flowkit.models.llflow.train import shipped_configs
        >>> shipped_configs()
        ['default', 'lol', 'lol_small', 'lol_v2', 'synthetic_v2', 'synthetic_v4', 'tiny']
    """
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def load_config(source: str | Path) -> TrainConfig:
    """Read a training config from a TOML file, or a shipped config by name (see :func:`shipped_configs`).

    Keys left out take their defaults. A mistake raises a :class:`ValueError` that starts with the
    file and names the key.
    """
    path = Path(source)
    if not path.suffix and not path.exists():
        path = CONFIG_DIR / f"{source}.toml"
        if not path.exists():
            raise FileNotFoundError(f"no config file {source!r} and no shipped config of that name "
                                    f"(shipped: {shipped_configs()})")
    with open(path, "rb") as handle:
        try:
            table = tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path} is not valid TOML: {error}") from error
    unknown = sorted(set(table) - {"model", "data", "optim", "loss", "run"})
    if unknown:
        raise ValueError(f"{path}: unknown sections {unknown}; expected [model], [data], [optim], [loss], [run]")
    for name in ("model", "data", "optim", "loss", "run"):
        if not isinstance(table.get(name, {}), dict):
            raise ValueError(f"{path}: {name} must be a [{name}] table, got {table[name]!r}")
    try:
        config = TrainConfig(
            model=dict(table.get("model", {"preset": "lol_small"})),
            data=_section(DataSection, table.get("data", {}), "data"),
            optim=_section(OptimSection, table.get("optim", {}), "optim"),
            loss=_section(LossSection, table.get("loss", {}), "loss"),
            run=_section(RunSection, table.get("run", {}), "run"),
        )
        config.llflow_config()  # the model section is checked now, not when training starts
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    return config
