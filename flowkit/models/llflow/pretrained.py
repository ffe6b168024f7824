"""Trained LLFlow weights shipped inside the package, and how they are written and read.

A shipped model is one safetensors file in ``weights/``, refused before parsing unless its sha256
matches the one recorded here; its metadata holds its :class:`~flowkit.models.LLFlowConfig` and
model card summary. Loading runs no pickle.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from flowkit.models.llflow._weights import WeightsError, load_checked, save_safetensors
from flowkit.models.llflow.config import LLFlowConfig

__all__ = ["DEFAULT_PRETRAINED", "MEAN_OF_PAIR", "PRETRAINED", "PRIOR_MEAN", "PretrainedModel", "export_pretrained",
           "load_pretrained", "pretrained_names", "read_exported", "round_weights"]

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class PretrainedModel:
    """A trained model shipped with flowkit.

    Attributes:
        name: what ``LLFlow.from_pretrained(name)`` and ``--pretrained`` take.
        file: the safetensors file in ``flowkit/models/llflow/weights/``.
        sha256: the file's sha256, checked at every load.
        summary: one line for users: what it is and what it was trained on.
        enhance_defaults: the loaded model's :attr:`~flowkit.models.LLFlow.enhance_defaults`.
    """

    name: str
    file: str
    sha256: str
    summary: str
    enhance_defaults: dict[str, float | int | None] = field(default_factory=lambda: dict(MEAN_OF_PAIR))

    @property
    def path(self) -> Path:
        """Where the weight file is installed."""
        return WEIGHTS_DIR / self.file


MEAN_OF_PAIR = {"temperature": 1.0, "average": 2, "seed": 0}
"""How the shipped models enhance, their ``enhance_defaults`` (v3's and v4's at temperature 0.8).

The mean of an antithetic pair of decodes at temperature 1 with a fixed seed, an estimate of the
conditional mean (see :meth:`~flowkit.models.LLFlow.enhance`; the model card measures it against
the reference's decode of the prior mean). ``llflow-synthetic-v3`` and ``-v4`` decode their pair at
0.8: v3 scores the same on the validation pairs there, and its decodes diverge on fewer real photographs."""

PRIOR_MEAN = {"temperature": 0.0, "average": 1, "seed": None}
"""The reference LLFlow's decode, a new model's ``enhance_defaults``.

One decode of the prior's mean, temperature 0, so no noise is drawn and no seed is needed. It
scores lower than :data:`MEAN_OF_PAIR` on every validation set the model card reports."""

PRETRAINED: dict[str, PretrainedModel] = {}
"""The shipped models by name."""

DEFAULT_PRETRAINED = "llflow-synthetic-v4"
"""The model ``LLFlow.from_pretrained()`` and ``flowkit enhance`` use when none is named."""


def _register(model: PretrainedModel) -> None:
    PRETRAINED[model.name] = model


_register(PretrainedModel(
    name="llflow-small-synthetic",
    file="llflow-small-synthetic.safetensors",
    sha256="56a7b00e58931c8858a2bef5c83efd9060ed4c5767822db5972d296b82bf8f40",
    summary="a slimmed LOL_smallNet trained by flowkit on photographs darkened by the LOL-calibrated "
            "synthesizer (not on LOL); see the model card in the docs",
))


_register(PretrainedModel(
    name="llflow-synthetic-v2",
    file="llflow-synthetic-v2.safetensors",
    sha256="94007ad9b0afaadbc366daf751f429483f575d09fa5bf0473f0ed1135a26c855",
    summary="the slimmed LOL_smallNet of llflow-small-synthetic trained 3.5 times longer by flowkit on 580 "
            "photographs darkened to real low-light exposures (not on LOL); see the model card in the docs",
))


_register(PretrainedModel(
    name="llflow-synthetic-v3",
    file="llflow-synthetic-v3.safetensors",
    sha256="29fb18e552bfc500bb805b18bd192aae4235a943a53933c5384ba72f8fd05b21",
    summary="the slimmed LOL_smallNet of llflow-small-synthetic trained 8.6 times longer by flowkit, with "
            "dequantised targets, on 580 photographs darkened to real low-light exposures (not on LOL); see the "
            "model card in the docs",
    # Its pair diverges at T = 1 on 8 of the 24 real photographs of the model card's figures, and
    # scores the same on Kodak24 at 0.8 (the model card).
    enhance_defaults={**MEAN_OF_PAIR, "temperature": 0.8},
))


_register(PretrainedModel(
    name="llflow-synthetic-v4",
    file="llflow-synthetic-v4.safetensors",
    sha256="16ca147deec0a094904eebde99989d0f2d6023729d2a739edc3b1c0fe8128530",
    summary="llflow-synthetic-v3 fine-tuned by flowkit with 7% of its photographs darkened only mildly and without "
            "a colour cast, so that brighter inputs keep their exposure (not trained on LOL); see the model card in "
            "the docs",
    # v3's temperature: at 0.8 its pair diverges on the same 4 of the card's 24 real photographs as v3's.
    enhance_defaults={**MEAN_OF_PAIR, "temperature": 0.8},
))


def pretrained_names() -> list[str]:
    """Names of the shipped models, the default first.

    Example:
        >>> from flowkit.models.llflow.pretrained import pretrained_names
        >>> pretrained_names()[0]
        'llflow-synthetic-v4'
    """
    return sorted(PRETRAINED, key=lambda name: (name != DEFAULT_PRETRAINED, name))


def load_pretrained(name: str | None = None, *, model_class: Callable[[LLFlowConfig], nn.Module]):
    """The shipped model ``name`` (default :data:`DEFAULT_PRETRAINED`) as an eval-mode :class:`LLFlow`.

    ``model_class`` builds the model from its config. A missing, damaged or replaced weight file
    raises a :class:`~flowkit.models.llflow._weights.WeightsError`.

    Example:
        >>> from flowkit.models import LLFlow
        >>> from flowkit.models.llflow.pretrained import load_pretrained
        >>> load_pretrained("nope", model_class=LLFlow)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: no shipped LLFlow model is called 'nope'; shipped: ['llflow-synthetic-v4'...]
    """
    name = DEFAULT_PRETRAINED if name is None else name
    if name not in PRETRAINED:
        raise ValueError(f"no shipped LLFlow model is called {name!r}; shipped: {pretrained_names()}")
    entry = PRETRAINED[name]
    tensors, metadata = load_checked(entry.path, entry.sha256)
    model = _build(tensors, metadata, entry.path, model_class)
    model.enhance_defaults = dict(entry.enhance_defaults)
    return model


def _build(tensors, metadata: dict[str, str], path: Path, cls):
    try:
        fields = json.loads(metadata["llflow_config"])
        fields["stack_blocks"] = tuple(fields["stack_blocks"])
        config = LLFlowConfig(**fields)
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: its metadata has no valid llflow_config ({exc})") from exc
    model = cls(config)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: the weights do not fit the config in its metadata ({exc})") from exc
    model.pretrained_card = {k: v for k, v in metadata.items() if k != "llflow_config"}
    return model.eval()


def export_pretrained(model, path: str | Path, card: dict[str, str] | None = None, *,
                      dtype: torch.dtype = torch.float32) -> str:
    """Write ``model`` (an :class:`LLFlow`) as a self-describing safetensors file; returns its sha256.

    Read it back with :func:`read_exported`, which needs the returned sha256. ``card`` holds model
    card entries, strings under any key but ``llflow_config``. ``dtype`` is the storage type of the
    floating-point tensors: ``torch.float16`` halves the file, and loading casts them back to the
    model's float32 (measure the rounded weights, :func:`round_weights`, before shipping them).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from flowkit.models import LLFlow, LLFlowConfig
        >>> from flowkit.models.llflow.pretrained import export_pretrained, read_exported
        >>> config = LLFlowConfig(encoder_channels=4, encoder_blocks=1, growth_channels=4, stack_blocks=(),
        ...                       steps_per_level=1, hidden_channels=4)
        >>> path = Path(tempfile.mkdtemp()) / "m.safetensors"
        >>> digest = export_pretrained(LLFlow(config), path, {"data": "scenes"})
        >>> model = read_exported(path, digest, model_class=LLFlow)
        >>> model.config == config, model.pretrained_card["data"], model.training
        (True, 'scenes', False)
    """
    metadata = {"llflow_config": json.dumps(dataclasses.asdict(model.config))}
    for key, value in (card or {}).items():
        if key == "llflow_config" or not isinstance(value, str):
            raise ValueError(f"card entries must be strings under other keys than llflow_config, got {key!r}")
        metadata[key] = value
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be torch.float32, torch.float16 or torch.bfloat16, got {dtype}")
    tensors = {name: value.to(dtype) if value.is_floating_point() else value
               for name, value in model.state_dict().items()}
    return save_safetensors(path, tensors, metadata)


def round_weights(model, dtype: torch.dtype):
    """Round ``model``'s floating-point weights and buffers to ``dtype`` and back, in place; returns it.

    The model then computes as the file that :func:`export_pretrained` writes with the same
    ``dtype`` will once loaded, so that what is measured is what ships.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.pretrained import round_weights
        >>> layer = torch.nn.Linear(1, 1)
        >>> with torch.no_grad():
        ...     _ = layer.weight.fill_(1 + 2**-12)
        >>> round_weights(layer, torch.float16).weight.item()  # float16 keeps 10 bits of mantissa
        1.0
    """
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(dtype))
    return model


def read_exported(path: str | Path, sha256: str, *, model_class: Callable[[LLFlowConfig], nn.Module]):
    """Load a file written by :func:`export_pretrained`, checking its sha256 (see there).

    Returns the eval-mode :class:`LLFlow`, its card entries in ``pretrained_card``; a file that is
    not the model raises a :class:`~flowkit.models.llflow._weights.WeightsError`.
    """
    tensors, metadata = load_checked(path, sha256)
    return _build(tensors, metadata, Path(path), model_class)
