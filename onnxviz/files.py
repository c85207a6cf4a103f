"""Writing output files atomically: a reader (or a failed run) never sees a half-written file."""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .errors import ReportError

__all__ = ["atomic_write", "npy_bytes"]


def _temp_file(directory: Path, name: str) -> tuple[int, Path]:
    """A new hidden file beside the target, created with mode 0o666 minus the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        candidate = directory / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(candidate, flags, 0o666), candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file in {directory}")  # pragma: no cover


def atomic_write(path: str | os.PathLike[str], data: bytes | Iterable[str], *, what: str = "file") -> Path:
    """Write ``data`` (bytes, or text chunks streamed as UTF-8) to ``path`` atomically.

    The data goes to a temporary file in the same folder, is flushed to disk and moved over
    ``path`` with ``os.replace``. If anything fails (also while the chunks are being produced,
    e.g. a template that raises mid-way) the temporary file is removed and an existing ``path``
    is left as it was. OS errors become :class:`ReportError` with a hint.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise ReportError(
            f"cannot write the {what} to {str(target)!r}: folder {str(directory)!r} does not exist",
            hint="create the folder first or choose another output path",
        )
    tmp: Path | None = None
    try:
        fd, tmp = _temp_file(directory, target.name)
        if isinstance(data, (bytes, bytearray)):
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        else:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                for chunk in data:
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, target)
        tmp = None
    except OSError as e:
        raise ReportError(
            f"cannot write the {what} to {str(target)!r}: {e.strerror or e}",
            hint="check that the folder is writable and has free space",
        ) from e
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return target


def npy_bytes(array: np.ndarray) -> bytes:
    """The array in ``.npy`` format (for :func:`atomic_write`)."""
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()
