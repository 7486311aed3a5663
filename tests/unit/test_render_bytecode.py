"""The bytecode script the BuildKit install steps run (templates/bytecode.py), with this interpreter on
install roots made here: what it compiles, what it keeps in its cache and copies back, and that Python
uses the copied files only for the sources they were compiled from."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from mreg.render import BUILTIN_TEMPLATES, BYTECODE_SCRIPT, render
from mreg.spec import load_spec
from tests.support import make_lock


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mreg_bytecode", BUILTIN_TEMPLATES / "bytecode.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bytecode = load_script()

SOURCES = {"webframe/__init__.py": "from webframe.app import App\n", "webframe/app.py": "class App:\n    pass\n"}


def install(root: Path, files: dict[str, str], *, name: str = "webframe", hashes: bool = True) -> None:
    """A distribution as an installer leaves it: its files and a RECORD that lists them (with hashes)."""
    info = root / f"{name}-1.0.dist-info"
    shutil.rmtree(info, ignore_errors=True)
    info.mkdir(parents=True)
    rows = []
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        rows.append(f"{path},sha256={digest},{len(text)}" if hashes else f"{path},,")
    rows += [f"{name}-1.0.dist-info/METADATA,,", f"{name}-1.0.dist-info/RECORD,,"]
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "RECORD").write_text("\n".join(rows) + "\n")


def reinstall(root: Path, files: dict[str, str]) -> None:
    """A fresh install of the same distribution at the same place (a later build's new layer)."""
    shutil.rmtree(root)
    install(root, files)


def compiled(root: Path, path: str) -> Path:
    return Path(importlib.util.cache_from_source(str(root / path)))


def test_sources_are_compiled_hash_checked_and_kept_for_the_next_build(tmp_path: Path) -> None:
    root, cache = tmp_path / "site-packages", tmp_path / "cache"
    install(root, SOURCES)
    assert bytecode.main(cache, [root]).startswith(
        "Bytecode for 1 distributions: 0 from the cache, 1 compiled (2 files)"
    )
    for path, text in SOURCES.items():
        data = compiled(root, path).read_bytes()
        assert data[:4] == importlib.util.MAGIC_NUMBER
        assert int.from_bytes(data[4:8], "little") == 0b11  # PEP 552: hash-based, checked on import
        assert data[8:16] == importlib.util.source_hash(text.encode())
    [entry] = cache.iterdir()
    assert sorted(p.relative_to(entry).as_posix() for p in entry.rglob("*.pyc")) == sorted(
        compiled(root, path).relative_to(root).as_posix() for path in SOURCES
    )


def test_the_next_build_of_the_same_files_copies_them_from_the_cache(tmp_path: Path) -> None:
    root, cache = tmp_path / "site-packages", tmp_path / "cache"
    install(root, SOURCES)
    bytecode.main(cache, [root])
    first = {path: compiled(root, path).read_bytes() for path in SOURCES}
    reinstall(root, SOURCES)
    line = bytecode.main(cache, [root])
    assert line.startswith("Bytecode for 1 distributions: 1 from the cache, 0 compiled (0 files)")
    assert {path: compiled(root, path).read_bytes() for path in SOURCES} == first


def test_other_sources_or_another_place_get_other_entries(tmp_path: Path) -> None:
    root, cache = tmp_path / "site-packages", tmp_path / "cache"
    install(root, SOURCES)
    bytecode.main(cache, [root])
    reinstall(root, {**SOURCES, "webframe/app.py": "class App:\n    debug = True\n"})
    assert " 0 from the cache, 1 compiled" in bytecode.main(cache, [root])
    install(tmp_path / "elsewhere", SOURCES)  # the bytecode names its source's path
    assert " 0 from the cache, 1 compiled" in bytecode.main(cache, [tmp_path / "elsewhere"])
    assert len(list(cache.iterdir())) == 3


def test_compiled_distributions_are_left_alone_and_unhashed_ones_are_not_cached(tmp_path: Path) -> None:
    root, cache = tmp_path / "site-packages", tmp_path / "cache"
    install(root, SOURCES)
    bytecode.main(cache, [root])
    assert bytecode.main(cache, [root]).startswith("Bytecode for 0 distributions")
    install(root, {"plain/__init__.py": "VALUE = 1\n"}, name="plain", hashes=False)
    assert " 0 from the cache, 1 compiled (1 files)" in bytecode.main(cache, [root])
    assert compiled(root, "plain/__init__.py").exists()
    assert len(list(cache.iterdir())) == 1


def test_a_source_that_does_not_compile_is_left_without_bytecode(tmp_path: Path) -> None:
    root = tmp_path / "site-packages"
    install(root, {**SOURCES, "webframe/py2.py": "print 'vendored'\n"})
    bytecode.main(tmp_path / "cache", [root])
    assert not compiled(root, "webframe/py2.py").exists()
    assert all(compiled(root, path).exists() for path in SOURCES)
    reinstall(root, {**SOURCES, "webframe/py2.py": "print 'vendored'\n"})
    assert " 1 from the cache" in bytecode.main(tmp_path / "cache", [root])
    assert not compiled(root, "webframe/py2.py").exists()


def test_an_unwritable_cache_leaves_the_bytecode_in_place(tmp_path: Path) -> None:
    root, cache = tmp_path / "site-packages", tmp_path / "cache"
    install(root, SOURCES)
    cache.write_text("not a directory")
    bytecode.main(cache / "entries", [root])
    assert all(compiled(root, path).exists() for path in SOURCES)


def test_python_uses_a_copied_file_only_for_its_own_source(tmp_path: Path) -> None:
    root, cache = tmp_path / "site-packages", tmp_path / "cache"
    install(root, SOURCES)
    bytecode.main(cache, [root])
    reinstall(root, SOURCES)
    assert " 1 from the cache" in bytecode.main(cache, [root])
    pyc = compiled(root, "webframe/app.py")
    os.utime(root / "webframe/app.py", (1, 1))  # times do not matter to a hash-checked file
    kept = pyc.read_bytes()
    run = [sys.executable, "-c", "import webframe.app as m; print(m.App.__dict__.get('debug'))"]
    env = {**os.environ, "PYTHONPATH": str(root)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    assert subprocess.run(run, env=env, capture_output=True, text=True, check=True).stdout == "None\n"
    assert pyc.read_bytes() == kept  # valid: used as it is
    (root / "webframe/app.py").write_text("class App:\n    debug = True\n")
    assert subprocess.run(run, env=env, capture_output=True, text=True, check=True).stdout == "True\n"
    assert pyc.read_bytes() != kept  # another source: Python compiled it anew


@pytest.mark.parametrize("buildkit", [True, False])
def test_only_buildkit_builds_carry_the_script_and_only_base_and_serve_run_it(tmp_path: Path, buildkit: bool) -> None:
    (tmp_path / "registry.toml").write_text(
        '[model]\nname = "m"\n[packages]\nshared = ["numpy"]\ntrain = ["pandas"]\nserve = ["flask"]\n'
    )
    spec = load_spec(tmp_path / "registry.toml")
    sets = {"base": {"numpy": "1.26.4"}, "train": {"numpy": "1.26.4", "pandas": "2.1.4"},
            "serve": {"numpy": "1.26.4", "flask": "3.0.0"}, "tools": {"uv": "0.13.9"}}  # fmt: skip
    context = render(spec, make_lock(spec, sets), buildkit=buildkit)
    runs = [line for line in context.dockerfile.splitlines() if "/tmp/mreg-bytecode.py /root/.cache" in line]
    if not buildkit:
        assert BYTECODE_SCRIPT not in context.generated
        assert runs == []
        return
    assert context.generated[BYTECODE_SCRIPT] == (BUILTIN_TEMPLATES / "bytecode.py").read_text()
    stages = context.dockerfile.split("\nFROM ")
    assert [stage.split("\n", 1)[0].rsplit(" ", 1)[-1] for stage in stages if "mreg-bytecode.py /root" in stage] == [
        "base",
        "serve",
    ]
    assert "--compile-bytecode" not in context.dockerfile
