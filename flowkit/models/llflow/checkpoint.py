"""Atomic, code-free training checkpoints that restore every random state.

A checkpoint is renamed into place once complete, so a killed process leaves the previous one
intact, and holds only tensors, numbers and strings, so it loads with ``weights_only=True``:
opening one never runs code.
"""

from __future__ import annotations

import dataclasses
import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowkit.models.llflow._files import write_atomically

__all__ = ["MODEL_FORMAT", "capture_rng_state", "load_checkpoint", "model_weights", "remove_stale_temporaries",
           "restore_rng_state", "save_checkpoint", "save_model", "save_weights"]

#: The ``format`` entry of a weights-only file (:func:`save_weights`), which no run can resume from.
MODEL_FORMAT = "flowkit.model/1"


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename); return the path.

    ``state`` holds tensors, numbers, strings, and lists and dicts of those. A failed write (a full
    disk included) raises an :class:`OSError` whose ``filename`` is ``path``.

    Example:
        >>> import tempfile, torch
        >>> from flowkit.models.llflow.checkpoint import load_checkpoint, save_checkpoint
        >>> folder = tempfile.mkdtemp()
        >>> path = save_checkpoint({"step": 3, "w": torch.ones(2)}, f"{folder}/last.pt")
        >>> load_checkpoint(path)["step"]
        3
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Serialised in memory first: torch.save reports a failed write (a full disk) as a C++
    # "enforce fail" RuntimeError, while a plain write raises the system's OSError.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return write_atomically(path, buffer.getbuffer())


def save_weights(weights: dict[str, torch.Tensor], llflow_config: dict[str, Any], path: str | os.PathLike,
                 **extra: Any) -> Path:
    """Save an LLFlow's ``weights`` and config dict (atomically) in the form ``flowkit enhance`` loads.

    The file holds ``{"format": "flowkit.model/1", "model": weights, "llflow_config": llflow_config}``
    and any ``extra`` entries (provenance, say), which loaders ignore. Use :func:`save_model` for a
    model in memory; this is for weights taken out of a checkpoint (its EMA weights, or a float16
    copy) without building the model.

    Example:
        >>> import tempfile, torch
        >>> path = save_weights({"w": torch.ones(2)}, {"hidden_channels": 8}, tempfile.mkdtemp() + "/w.pt",
        ...                     campaign={"step": 10})
        >>> state = load_checkpoint(path)
        >>> state["format"], state["campaign"], model_weights(state, "w.pt")[1]
        ('flowkit.model/1', {'step': 10}, {'hidden_channels': 8})
    """
    if set(extra) & {"format", "model", "llflow_config"}:
        raise ValueError(f"extra entries may not replace format, model or llflow_config, got {sorted(extra)}")
    return save_checkpoint({"format": MODEL_FORMAT, "model": weights, "llflow_config": llflow_config, **extra}, path)


def save_model(model: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Save an LLFlow's weights and config (atomically) in the form ``flowkit enhance`` / ``evaluate`` load.

    Not a training checkpoint (a run cannot resume from it); load it with
    :func:`flowkit.models.llflow.cli.load_model`.

    Example:
        >>> import tempfile
        >>> from flowkit.models import LLFlow, LLFlowConfig
        >>> from flowkit.models.llflow.cli import load_model
        >>> config = LLFlowConfig(encoder_channels=8, encoder_blocks=2, growth_channels=4,
        ...                       stack_blocks=(1,), steps_per_level=1, hidden_channels=8)
        >>> path = save_model(LLFlow(config), tempfile.mkdtemp() + "/model.pt")
        >>> load_model(path).config == config
        True
    """
    config = dataclasses.asdict(model.config)
    config["stack_blocks"] = list(config["stack_blocks"])
    return save_weights(model.state_dict(), config, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: no code runs).

    A file that is empty, unreadable by the safe loader, or holds non-finite weights raises a
    :class:`ValueError` (torch's advice to load it with ``weights_only=False`` never reaches the user).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> empty = Path(tempfile.mkdtemp()) / "empty.pt"
        >>> empty.write_bytes(b"")
        0
        >>> load_checkpoint(empty)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: .../empty.pt is empty, not a checkpoint
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if not path.is_file():
        raise ValueError(f"{path} is not a file, expected a checkpoint")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty, not a checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise ValueError(
            f"{path} is not a flowkit or LLFlow reference checkpoint (it is truncated, in another format, "
            "or holds objects other than tensors, which flowkit never loads)"
        ) from error
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, expected a checkpoint dict")
    bad = _non_finite(state)
    if bad:
        raise ValueError(f"{path} holds non-finite values (NaN or infinity) in {bad}; refusing to use it")
    return state


def model_weights(state: dict[str, Any], source: str, *, ema: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """The weights and the model config (a dict) that a flowkit checkpoint ``state`` holds.

    A training checkpoint's EMA weights are taken when it has them and ``ema`` is true. ``source``
    names the checkpoint in the error that a state without weights or config raises.

    Example:
        >>> weights, config = model_weights({"model": {"w": 1}, "ema": {"w": 2}, "llflow_config": {}}, "a.pt")
        >>> weights
        {'w': 2}
        >>> model_weights({"step": 3}, "b.pt")
        Traceback (most recent call last):
        ...
        ValueError: b.pt is not a flowkit checkpoint (it has no model weights and model config)
    """
    if not isinstance(state.get("model"), dict) or not isinstance(state.get("llflow_config"), dict):
        raise ValueError(f"{source} is not a flowkit checkpoint (it has no model weights and model config)")
    return (state["ema"] if ema and "ema" in state else state["model"]), state["llflow_config"]


def _non_finite(value: Any, name: str = "") -> str | None:
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return name or "the checkpoint"
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _non_finite(item, f"{name}.{key}" if name else str(key))
        if found:
            return found
    return None


def remove_stale_temporaries(folder: str | os.PathLike, name: str = "last.pt") -> list[Path]:
    """Delete the temporary files that killed runs left beside ``folder/name``; return them.

    Call it when a run (re)starts: only files named ``.NAME.*.tmp`` are removed.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / ".last.pt.abc123.tmp").write_bytes(b"partial")
        >>> [p.name for p in remove_stale_temporaries(folder)]
        ['.last.pt.abc123.tmp']
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.glob(f".{name}.*.tmp") if p.is_file())
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def capture_rng_state() -> dict[str, Any]:
    """The state of every global RNG a training run draws from: Python, NumPy, torch CPU and CUDA.

    Example:
        >>> import torch
        >>> from flowkit.models.llflow.checkpoint import capture_rng_state, restore_rng_state
        >>> state = capture_rng_state()
        >>> a = torch.rand(2)
        >>> restore_rng_state(state)
        >>> torch.equal(a, torch.rand(2))
        True
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": _to_lists(random.getstate()),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states captured by :func:`capture_rng_state` (CUDA's only where available)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(value: Any) -> Any:
    # weights_only loading accepts lists, not arbitrary tuples-of-tuples from random.getstate().
    if isinstance(value, tuple):
        return [_to_lists(v) for v in value]
    return value
