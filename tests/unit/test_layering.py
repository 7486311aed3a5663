"""The layering the README describes, held by tests: imports flow one way, and the stores are opened only
by the registry."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "mreg"


def imported_modules(statement: str) -> set[str]:
    """The mreg modules a fresh interpreter holds after `statement`."""
    script = f"import json, sys; {statement}; print(json.dumps(sorted(m for m in sys.modules if m.startswith('mreg'))))"
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return set(json.loads(output))


def test_render_imports_no_engine_module() -> None:
    loaded = imported_modules("import mreg.render")
    assert "mreg.render" in loaded
    assert not [module for module in loaded if module.startswith("mreg.engine")]


def test_the_spec_imports_no_store_code() -> None:
    loaded = imported_modules("import mreg.spec")
    assert not loaded & {"mreg._s3", "mreg._gcs", "mreg.storage", "mreg.records"}


def test_help_imports_no_heavy_library() -> None:
    script = (
        "import sys; from mreg.cli import run; run(['--help']); "
        "print(sorted(m for m in ('boto3', 'botocore', 'docker', 'google', 'pydantic', 'rich', 'starlette') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip().endswith("[]")


def module_imports(path: Path) -> set[str]:
    """Every module a source file imports, at any level (lazy imports included)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_records_do_not_import_storage_and_only_the_registry_opens_stores() -> None:
    for path in SRC.rglob("*.py"):
        relative = path.relative_to(SRC).as_posix()
        imports = module_imports(path)
        if relative.startswith("records/"):
            assert not [module for module in imports if module.startswith("mreg.storage")], relative
        text = path.read_text()
        if relative != "registry.py" and not relative.startswith(("records/", "storage/")):
            assert "open_record_store(" not in text, f"{relative} opens a record store itself"
            assert "open_object_store(" not in text, f"{relative} opens an object store itself"
