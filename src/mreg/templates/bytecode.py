"""Compile the bytecode of each installed distribution that has none, reusing what earlier builds compiled.

The Dockerfile's install steps run it with the image's own Python: `python -I bytecode.py CACHE_DIR`. A
distribution's compiled files are kept in CACHE_DIR (a BuildKit cache mount) under a key made of its
sources' hashes (from its RECORD), the interpreter's bytecode version and the install location, so that a
later build installing the same files copies them instead of compiling them again: after a one-pin change
only the distributions that changed are compiled. The files are hash-checked (PEP 552): Python compares
each with its source when it imports it, whatever the files' times, so a copied file is only ever used
for the source it was compiled from. A file that does not compile is left without bytecode, as pip and
uv leave it. The standard library only: the image's Python runs it before anything else is installed.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib.util
import os
import py_compile
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

PARALLEL_FROM = 200
"""From this many files on, compile with one process per CPU."""

Pair = tuple[Path, Path]  # a source and its bytecode file


def main(cache: Path, roots: list[Path]) -> str:
    """Give every distribution installed under `roots` its bytecode, from `cache` where it has it; what
    was done, in one line."""
    started = time.perf_counter()
    copied = 0
    compiled_distributions = 0
    todo: list[Pair] = []
    stores: list[tuple[Path, Path, list[Path]]] = []  # cache entry, install root, bytecode files
    for root in roots:
        for record in sorted(root.glob("*.dist-info/RECORD")):
            sources = _sources(record)
            if not sources or _bytecode(root / sources[0][0]).exists():
                continue  # no Python, or compiled by an earlier step
            pairs = [(root / path, _bytecode(root / path)) for path, _ in sources]
            entry = _entry(cache, root, sources)
            if entry is not None and entry.is_dir():
                _copy_tree(entry, root)
                copied += 1
                continue
            compiled_distributions += 1
            todo += pairs
            if entry is not None:
                stores.append((entry, root, [compiled for _, compiled in pairs]))
    _compile_all(todo)
    for entry, root, compiled in stores:
        _store(entry, root, compiled)
    milliseconds = round((time.perf_counter() - started) * 1000)
    return (
        f"Bytecode for {copied + compiled_distributions} distributions: {copied} from the cache, "
        f"{compiled_distributions} compiled ({len(todo)} files) in {milliseconds}ms"
    )


def _sources(record: Path) -> list[tuple[str, str]]:
    """(path relative to the install root, its RECORD hash or '') of each Python source a RECORD lists
    inside the install root (a script installed beside the interpreter is not imported)."""
    with record.open(newline="", encoding="utf-8") as handle:
        rows = [(os.path.normpath(row[0]), row[1:]) for row in csv.reader(handle) if row and row[0].endswith(".py")]
    return [
        (path, rest[0] if rest else "")
        for path, rest in rows
        if not (path.startswith("..") or Path(path).is_absolute())
    ]


def _bytecode(source: Path) -> Path:
    return Path(importlib.util.cache_from_source(str(source)))


def _entry(cache: Path, root: Path, sources: list[tuple[str, str]]) -> Path | None:
    """The cache entry of one distribution's sources; None when its RECORD gives a source no hash."""
    if not all(digest for _, digest in sources):
        return None
    key = hashlib.sha256(f"{importlib.util.MAGIC_NUMBER.hex()}\0{root}\0".encode())
    for path, digest in sorted(sources):
        key.update(f"{path}\0{digest}\0".encode())
    return cache / key.hexdigest()


def _copy_tree(source: Path, target: Path) -> None:
    for directory, _, names in os.walk(source):
        destination = target / Path(directory).relative_to(source)
        destination.mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copyfile(Path(directory, name), destination / name)


def _compile_all(todo: list[Pair]) -> None:
    if len(todo) < PARALLEL_FROM or (os.cpu_count() or 1) < 2:
        for pair in todo:
            _compile(pair)
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor() as pool:
        list(pool.map(_compile, todo, chunksize=32))


def _compile(pair: Pair) -> None:
    source, compiled = pair
    with contextlib.suppress(py_compile.PyCompileError, OSError, ValueError):
        py_compile.compile(
            str(source),
            cfile=str(compiled),
            dfile=str(source),
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
        )


def _store(entry: Path, root: Path, compiled: list[Path]) -> None:
    """Keep one distribution's bytecode for later builds: written aside, then renamed into place whole."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=entry.parent))
    except OSError:  # a read-only or full cache: the image has its bytecode all the same
        return
    try:
        for path in compiled:
            if path.exists():
                target = staging / path.relative_to(root)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
        staging.rename(entry)
    except OSError:  # another build stored it first, or the cache is full
        shutil.rmtree(staging, ignore_errors=True)


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), sorted({Path(sysconfig.get_paths()[name]) for name in ("purelib", "platlib")})))
