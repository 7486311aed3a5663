"""The command line: instant help, exit codes, messages without tracebacks, render outputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import REPO, copy_example, mreg

HEAVY = ("docker", "boto3", "botocore", "pydantic", "jinja2", "rich", "packaging")


def test_help_imports_no_heavy_library() -> None:
    probe = (
        "import sys\n"
        "from mreg.cli import run\n"
        "assert run(['--help']) == 0\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_build_progress_outside_a_terminal_is_plain_lines_without_rich() -> None:
    probe = (
        "import sys\n"
        "from mreg.cli._app import Report\n"
        "with Report().phase('building') as phase:\n"
        "    phase.line('#1 DONE')\n"
        "print('rich' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stderr.startswith("mreg: building: done in ")  # stderr is a pipe here, as in CI
    assert result.stdout.strip() == "False"


def test_render_prints_the_golden_dockerfile() -> None:
    result = mreg("render", cwd=REPO)
    assert result.stdout == (REPO / "tests" / "data" / "golden" / "iris.Dockerfile").read_text()


def test_render_writes_a_file_and_a_context(tmp_path: Path) -> None:
    project = copy_example(tmp_path / "project")
    mreg("render", "-o", "Dockerfile", "--context", "ctx", cwd=project)
    assert (project / "Dockerfile").read_text() == (project / "ctx" / "Dockerfile").read_text()
    assert (project / "ctx" / "stages" / "serve" / "serve.py").read_bytes() == (
        project / "examples" / "iris" / "serve.py"
    ).read_bytes()


def test_spec_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "registry.toml").write_text('[model]\nname = "x"\n[packages]\nshared = ["a b"]\n')
    for command in (["render"], ["build"], ["register", "m.bin"]):
        result = mreg(*command, cwd=tmp_path, check=False)
        assert result.returncode == 2
        assert result.stderr.startswith('error: registry.toml: packages.shared[0] = "a b": is not a valid PEP 508')
        assert "Traceback" not in result.stderr


def test_spec_option_and_missing_spec(tmp_path: Path) -> None:
    result = mreg("--spec", "elsewhere.toml", "render", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stderr == (
        "error: elsewhere.toml: file not found (pass --spec PATH or run mreg beside registry.toml).\n"
    )


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    result = mreg("build", "--target", "deploy", cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "Invalid value for '--target'" in result.stderr


def test_show_and_list_of_unknown_models(tmp_path: Path) -> None:
    project = copy_example(tmp_path / "project")
    missing = mreg("show", "iris-rf", cwd=project, check=False)
    assert missing.returncode == 3
    assert missing.stderr.startswith("error: model iris-rf has no versions in ")
    assert mreg("list", "--json", cwd=project).stdout.strip() == "[]"
    bad = mreg("show", "../../etc/passwd", cwd=project, check=False)
    assert bad.returncode == 2
