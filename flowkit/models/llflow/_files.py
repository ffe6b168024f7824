"""Files written whole or not at all: a temporary file beside the target, flushed, then renamed.

Every file flowkit writes (checkpoints, weights, images, reports) goes through
:func:`write_atomically`. A crash or a full disk therefore never leaves a half-written file under
the final name, an earlier file of that name survives a failed write, and a failure is one
:class:`OSError` that names the file (``error.filename``) and says why (``error.strerror``, such
as "No space left on device"), which the command line prints as one line.
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

    Args:
        path: the file to write; its folder must exist. An existing file is replaced only once
            the new one is complete and on disk.
        data: the bytes to write, or a function that writes them into the open binary file it is
            given (for writers that stream, such as Pillow's).

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        OSError: the write failed; ``filename`` is ``path`` and ``strerror`` the system's reason.
            No temporary file is left behind.

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
