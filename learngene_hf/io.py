"""Small file helpers: every file we write goes to a temporary name first, then is renamed.

A crash or a kill in the middle of a write therefore never leaves a half-written file under
the final name, and an older complete file stays in place until the new one is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    Use it for writers that want a file name (``torch.save``, ``safetensors.save_file``,
    ``matplotlib.savefig``)::

        with atomic_path("out/model.safetensors") as tmp:
            save_file(tensors, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp (and some writers, e.g. safetensors) create 0600 files: give the file the mode
        # any new file of the user gets (0666 minus the umask), after the writer is done with it
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def file_mode() -> int:
    """The mode of a new file under the process's umask (``0o644`` for the usual umask 022)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def follow_umask(path: str | os.PathLike) -> None:
    """Give ``path`` (a file, or every file and folder under a folder) the modes that the user's
    umask gives new files and folders, e.g. after a library wrote 0600 files."""
    path = Path(path)
    mode = file_mode()
    if path.is_file():
        os.chmod(path, mode)
        return
    for folder, dirs, files in os.walk(path):
        for name in files:
            os.chmod(Path(folder) / name, mode)
        for name in dirs:
            os.chmod(Path(folder) / name, mode | ((mode & 0o444) >> 2))  # r -> r+x on folders


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and an atomic rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data: Any, *, indent: int = 2) -> Path:
    """Write ``data`` as JSON to ``path`` through a temporary file and an atomic rename."""
    return write_text_atomic(path, json.dumps(data, indent=indent, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing or malformed file raises an error naming the path."""
    from .errors import ArtifactError

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist. Check the folder name, or re-run the step that writes it.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ArtifactError(
            f"{path} is not valid JSON ({err}); the file is corrupt or truncated: re-create it."
        ) from err


def writable_folder(path: str | os.PathLike, what: str = "the output folder") -> Path:
    """Create the folder ``path`` (and its parents) and check that a file can be written in it, so
    that a bad output folder is refused before any long work. Raises :class:`ArtifactError`
    naming ``what`` and ``path``: a file in the way, a read-only or full disk, no permission."""
    from .errors import ArtifactError, os_error_message

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ArtifactError(f"{what} {path} is a file, not a folder; give a folder path (or move the file).")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", suffix=".tmp", dir=path)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        raise ArtifactError(
            f"Cannot write to {what} {path} ({os_error_message(err)}); give a folder on a writable disk with free "
            "space."
        ) from err
    return path
