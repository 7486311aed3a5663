"""Crash- and interrupt-safe local writes, shared by the file object store and the file record store."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def incoming(directory: Path) -> Iterator[tuple[BinaryIO, Path]]:
    """A new file in `directory` (opened for writing) that is removed on any exit unless moved away.

    Its name is chosen before it is created, so that no signal can arrive between its creation and the
    cleanup taking charge of it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f".incoming-{uuid.uuid4().hex}"
    try:
        with path.open("xb") as handle:
            yield handle, path
    finally:
        path.unlink(missing_ok=True)


def write_durably(handle: BinaryIO, data: bytes | None = None) -> None:
    """Write `data` (if any), then flush and fsync the file."""
    if data is not None:
        handle.write(data)
    handle.flush()
    os.fsync(handle.fileno())


def fsync_directory(directory: Path) -> None:
    """Make a rename or link in `directory` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
