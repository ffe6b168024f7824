"""Files written whole or not at all: a temporary file beside the target, flushed, then renamed.

Every file flowkit writes goes through :func:`write_atomically`, so a crash or a full disk never
leaves a half-written file, and a failure is one :class:`OSError` naming the file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["write_atomically"]


def write_atomically(path: str | os.PathLike, data: bytes | memoryview | Callable[[BinaryIO], None]) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    ``data`` is the bytes, or a function that writes them into the open binary file it is given.
    A failed write raises an :class:`OSError` whose ``filename`` is ``path`` and leaves no temporary file.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from flowkit.models.llflow._files import write_atomically
        >>> target = Path(tempfile.mkdtemp()) / "note.txt"
        >>> write_atomically(target, b"hello").read_text()
        'hello'
    """
    path = Path(path)
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(path)) from error
    try:
        with os.fdopen(handle, "wb") as out:
            if callable(data):
                data(out)
            else:
                out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)  # mkstemp creates 0600; these files are meant to be shared
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno is not None:
            # The system's errors (a full disk, permissions) name the target, not the temporary.
            raise OSError(error.errno, error.strerror or str(error), str(path)) from error
        raise
    return path
