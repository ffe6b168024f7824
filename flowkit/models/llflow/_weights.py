"""Weight files shipped inside the package: safetensors, checked against a sha256 before use.

No pickle runs, and the bytes that are parsed are the bytes that were hashed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from torch import Tensor

from flowkit.models.llflow._files import write_atomically

__all__ = ["WeightsError", "load_checked", "save_safetensors", "sha256_of"]


class WeightsError(RuntimeError):
    """A shipped weight file is missing, altered or unreadable; the message names it.

    Example:
        >>> str(WeightsError("w.safetensors: sha256 mismatch"))
        'w.safetensors: sha256 mismatch'
    """


def sha256_of(data: bytes) -> str:
    """Hex sha256 of ``data``.

    Example:
        >>> sha256_of(b"")[:12]
        'e3b0c44298fc'
    """
    return hashlib.sha256(data).hexdigest()


def _safetensors():
    try:
        import safetensors.torch
    except ImportError as exc:  # pragma: no cover - safetensors is a runtime dependency
        raise ImportError("shipped weights need safetensors: pip install safetensors") from exc
    return safetensors.torch


def load_checked(path: str | Path, sha256: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read a safetensors file whose sha256 must be ``sha256``; returns ``(tensors, metadata)``.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "w.safetensors"
        >>> digest = save_safetensors(path, {"w": torch.ones(2)}, {"note": "hi"})
        >>> tensors, metadata = load_checked(path, digest)
        >>> tensors["w"].tolist(), metadata["note"]
        ([1.0, 1.0], 'hi')
        >>> load_checked(path, "0" * 64)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        flowkit.models.llflow._weights.WeightsError: .../w.safetensors: sha256 is ..., expected 000...; the file is damaged or was replaced (reinstall flowkit)
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read the weight file ({exc.strerror or exc}); reinstall flowkit") from exc
    digest = sha256_of(data)
    if digest != sha256:
        raise WeightsError(
            f"{path}: sha256 is {digest}, expected {sha256}; the file is damaged or was replaced (reinstall flowkit)"
        )
    try:
        tensors = _safetensors().load(data)
        header_size = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_size]).get("__metadata__", {}) or {}
    except Exception as exc:  # safetensors raises its own error types
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from exc
    return tensors, metadata


def save_safetensors(path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> str:
    """Write ``tensors`` (contiguous copies) as safetensors, atomically; returns the file's sha256.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "w.safetensors"
        >>> len(save_safetensors(path, {"w": torch.zeros(3)}))
        64
    """
    path = Path(path)
    # Cloned: safetensors refuses tensors that share storage (e.g. tied or sliced weights).
    data = _safetensors().save({k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data)
    return sha256_of(data)
