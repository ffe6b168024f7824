"""Training configuration: a TOML file read into typed, validated sections."""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["DataSection", "OptimSection", "RunSection", "TrainConfig", "load_config", "shipped_configs"]

CONFIG_DIR = Path(__file__).parent / "configs"
SYNTHESIZERS = ("default", "lol")


@dataclass
class DataSection:
    """Where the training pairs come from and how they are batched.

    ``root`` is a LOL / LOL-v2 / pair-folder root (its train split trains, its test split
    validates); or ``train_low``/``train_high`` (and ``val_low``/``val_high``) name folders
    directly. With ``synthetic_source`` set, low-light pairs are synthesised from the
    normal-light images in that folder (or from generated scenes when it is ``"scenes"``) and
    ``root`` is ignored: written once into the run's output folder, or, with
    ``synthetic_online``, darkened afresh for every item and epoch
    (:class:`~flowkit.data.SyntheticPairDataset`). ``synthesizer`` picks the degradation's
    ranges: ``"default"`` or ``"lol"`` (fitted to real LOL pairs). Validation pairs are
    synthesised from ``synthetic_val_source`` when given, otherwise from the first
    ``synthetic_val_count`` images of ``synthetic_source``. ``real_train`` adds a folder of real
    pairs (``low/``, ``high/``) to the training set, each pair ``real_train_repeat`` times per
    epoch. Relative paths are taken from ``base`` when it is set (itself relative to the current
    directory), otherwise from the current directory.
    """

    root: str | None = None
    train_low: str | None = None
    train_high: str | None = None
    val_low: str | None = None
    val_high: str | None = None
    synthetic_source: str | None = None
    synthetic_count: int = 64
    synthetic_size: int = 96
    synthetic_val_count: int = 8
    patch_size: int = 160
    batch_size: int = 16
    flip: bool = True
    num_workers: int = 0
    cache: bool = False
    val_limit: int = 0
    """Validate on at most this many pairs; 0 validates on all of them."""
    synthesizer: str = "default"
    synthetic_online: bool = False
    synthetic_val_source: str | None = None
    real_train: str | None = None
    real_train_repeat: int = 1
    base: str | None = None
    """The folder that relative data paths are taken from (``None``: the current directory)."""

    def path(self, value: str | None) -> str | None:
        """``value`` taken from :attr:`base` when it is relative (``"scenes"`` stays as it is)."""
        if value is None or value == "scenes" or self.base is None or Path(value).is_absolute():
            return value
        return str(Path(self.base) / value)


@dataclass
class OptimSection:
    """Adam with linear warm-up and step halving (the reference's effective settings)."""

    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup: int = 0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.5
    grad_clip: float = 0.0
    """Clip the global gradient norm to this value; 0 turns clipping off."""
    ema: float = 0.0
    """Decay of an exponential moving average of the weights, e.g. 0.999; 0 turns it off."""


@dataclass
class RunSection:
    """Length, precision, seeds and how often to validate, log and checkpoint."""

    iterations: int = 1000
    amp: str = "none"
    """``"none"``, ``"bf16"`` or ``"fp16"`` (fp16 uses a gradient scaler)."""
    seed: int = 10
    val_every: int = 200
    checkpoint_every: int = 1000
    log_every: int = 10
    output: str = "runs/llflow"


@dataclass
class TrainConfig:
    """A whole training run: the model preset and overrides, data, optimiser and run sections.

    Example:
        >>> from flowkit.train import load_config
        >>> config = load_config("tiny")
        >>> config.model["preset"], config.run.iterations > 0
        ('tiny', True)
    """

    model: dict[str, Any] = field(default_factory=lambda: {"preset": "lol_small"})
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
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
        if self.data.synthesizer not in SYNTHESIZERS:
            raise ValueError(f"[data] synthesizer must be one of {sorted(SYNTHESIZERS)}, got {self.data.synthesizer!r}")
        if isinstance(self.data.real_train_repeat, bool) or not isinstance(self.data.real_train_repeat, int) \
                or self.data.real_train_repeat < 1:
            raise ValueError(f"[data] real_train_repeat must be a positive int, got {self.data.real_train_repeat!r}")
        if self.data.synthetic_online and (not self.data.synthetic_source or self.data.synthetic_source == "scenes"):
            raise ValueError("[data] synthetic_online needs synthetic_source to be a folder of photographs")
        has_folders = self.data.train_low is not None and self.data.train_high is not None
        if not (self.data.root or has_folders or self.data.synthetic_source):
            raise ValueError("[data] needs root, train_low + train_high, or synthetic_source")

    def llflow_config(self):
        """The :class:`~flowkit.models.LLFlowConfig` this run trains."""
        from flowkit.models.llflow.config import LLFlowConfig

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
    from flowkit.models.llflow.config import LLFlowConfig

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
    values = {}
    for key, value in table.items():
        values[key] = _typed(value, hints[key], f"[{name}] {key}")
    return cls(**values)


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

    ``lol``, ``lol_small`` and ``lol_v2`` are the reference's recipes; ``default`` trains the model
    shipped with flowkit (:meth:`~flowkit.models.LLFlow.from_pretrained`); ``tiny`` trains in
    minutes on CPU.

    Example:
        >>> from flowkit.train import shipped_configs
        >>> shipped_configs()
        ['default', 'lol', 'lol_small', 'lol_v2', 'tiny']
    """
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def load_config(source: str | Path) -> TrainConfig:
    """Read a training config from a TOML file, or a shipped config by name (see :func:`shipped_configs`).

    Unknown sections or keys are errors that name them.
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
    unknown = sorted(set(table) - {"model", "data", "optim", "run"})
    if unknown:
        raise ValueError(f"{path}: unknown sections {unknown}; expected [model], [data], [optim], [run]")
    for name in ("model", "data", "optim", "run"):
        if not isinstance(table.get(name, {}), dict):
            raise ValueError(f"{path}: {name} must be a [{name}] table, got {table[name]!r}")
    try:
        config = TrainConfig(
            model=dict(table.get("model", {"preset": "lol_small"})),
            data=_section(DataSection, table.get("data", {}), "data"),
            optim=_section(OptimSection, table.get("optim", {}), "optim"),
            run=_section(RunSection, table.get("run", {}), "run"),
        )
        config.llflow_config()  # the model section is checked now, not when training starts
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    return config
