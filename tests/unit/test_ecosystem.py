"""How mreg meets a user's tools: uv/cargo-style locks, the JSON Schema, the GitHub Action and its outputs,
shell completion, help, and progress (live, plain, quiet)."""

from __future__ import annotations

import ast
import json
import os
import pty
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mreg import _github, lock, pipeline
from mreg.engine import BuiltImage, Engine
from mreg.errors import InvalidInputError, MregError
from mreg.lock import ensure_lock, lock_path, write_lock
from mreg.registry import Registry
from mreg.schema import schema_text
from mreg.spec import STAGES, Spec, Stage, load_spec
from tests.support import DIGESTS, REPO, copy_example, make_lock, mreg, save_build

BIN = Path(sys.executable).parent
BAD_SPECS = REPO / "tests" / "data" / "bad_specs"
STRUCTURAL = re.compile(
    r"is not a known key|should be a table|is required but missing|input should be a valid (string|list|integer)"
)
"""Refusals a schema can state: unknown keys, wrong types, missing tables and keys."""
PINS = {"base": {"numpy": "1.26.4"}, "train": {"numpy": "1.26.4"}, "serve": {"numpy": "1.26.4"}}


def tool(name: str) -> str:
    """A checker from the test extra: a skip where it is missing, a failure under CI (a check that did not
    run proves nothing)."""
    path = BIN / name
    if not path.exists():
        message = f"{name} is not installed (the test extra has it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return str(path)


# -- locks -------------------------------------------------------------------------------------------------


@pytest.fixture
def spec(tmp_path: Path) -> Spec:
    (tmp_path / "registry.toml").write_text('[model]\nname = "m"\n[packages]\nshared = ["numpy==1.26.4"]\n')
    return load_spec(tmp_path / "registry.toml")


def stale(spec: Spec) -> Spec:
    write_lock(spec, make_lock(spec, PINS))
    spec.source.write_text(spec.source.read_text().replace("1.26.4", "1.26.3"))
    return load_spec(spec.source)


class Untouchable:
    """An engine a build must not reach: the lock is settled first."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the build used the engine ({name}) before settling its lock")


def test_locked_refuses_a_missing_and_a_stale_lock_before_any_engine_call(spec: Spec) -> None:
    engine: Engine = Untouchable()
    with pytest.raises(InvalidInputError, match=r"no lock file; run `mreg lock`\.$"):
        pipeline.build(spec, engine, lock_mode="locked")
    with pytest.raises(InvalidInputError, match=r"out of date: packages.shared changed in registry.toml"):
        pipeline.build(stale(spec), engine, lock_mode="locked")


def test_frozen_takes_the_lock_as_it_is(spec: Spec) -> None:
    current = stale(spec)
    assert ensure_lock(current, mode="frozen").pins("base") == {"numpy": "1.26.4"}
    lock_path(spec).unlink()
    with pytest.raises(InvalidInputError, match="no lock file"):
        ensure_lock(current, mode="frozen")


def test_auto_locks_a_missing_or_stale_lock_first_and_says_why(spec: Spec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lock, "resolve", lambda spec, indexes: make_lock(spec, PINS))  # uv is not under test
    reasons: list[str] = []

    @contextmanager
    def relocking(reason: str) -> Iterator[None]:
        reasons.append(reason)
        yield
        reasons.append("done")

    ensure_lock(spec, relocking=relocking)
    assert lock_path(spec).exists()
    ensure_lock(spec, relocking=relocking)  # current: nothing to do
    ensure_lock(stale(spec), relocking=relocking)
    assert reasons == [
        "no registry.lock",
        "done",
        "registry.lock is out of date (packages.shared changed)",
        "done",
    ]


def test_auto_never_overwrites_a_damaged_lock(spec: Spec) -> None:
    lock_path(spec).write_text("version = 2\n")
    with pytest.raises(InvalidInputError, match="not a lock file mreg can read"):
        ensure_lock(spec)
    assert lock_path(spec).read_text() == "version = 2\n"


def test_build_offers_locked_and_frozen_and_no_lock_flag() -> None:
    text = mreg("build", "--help", cwd=REPO).stdout
    assert "--locked" in text
    assert "--frozen" in text
    assert "--lock " not in text


# -- the JSON Schema ---------------------------------------------------------------------------------------


def good_specs() -> dict[str, str]:
    """The specs mreg accepts among the repository's and the string literals of the tests."""
    found = {"registry.toml": (REPO / "registry.toml").read_text()}
    found |= {str(path.relative_to(REPO)): path.read_text() for path in REPO.glob("examples/*/registry.toml")}
    for module in sorted((REPO / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "[model]" in node.value:
                try:
                    Spec.model_validate(tomllib.loads(node.value))
                except (tomllib.TOMLDecodeError, ValueError):
                    continue
                found[f"{module.relative_to(REPO)}:{node.lineno}"] = node.value
    return found


def structural_bad_specs() -> list[Path]:
    return sorted(p for p in BAD_SPECS.glob("*.toml") if STRUCTURAL.search(p.with_suffix(".expected").read_text()))


def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((REPO / "registry.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_committed_schema_is_the_generated_one() -> None:
    committed = (REPO / "registry.schema.json").read_text()
    assert committed == schema_text(), "run `mreg schema -o registry.schema.json`"
    assert mreg("schema", cwd=REPO).stdout == committed


def test_every_good_spec_validates(tmp_path: Path) -> None:
    specs = good_specs()
    assert len(specs) >= 10  # the repository's and those the tests write
    check = validator()
    for where, text in specs.items():
        errors = [error.message for error in check.iter_errors(tomllib.loads(text))]
        assert errors == [], where
    files = []
    for index, text in enumerate(specs.values()):
        files.append(tmp_path / f"spec{index}.toml")
        files[-1].write_text(text)
    schema = f"file://{REPO / 'registry.schema.json'}"
    result = subprocess.run(
        [tool("taplo"), "check", "--schema", schema, *map(str, files)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_every_structural_bad_spec_fails() -> None:
    cases = structural_bad_specs()
    assert len(cases) >= 20
    check = validator()
    schema = f"file://{REPO / 'registry.schema.json'}"
    for case in cases:
        assert list(check.iter_errors(tomllib.loads(case.read_text()))), case.name
        result = subprocess.run(
            [tool("taplo"), "check", "--schema", schema, str(case)], capture_output=True, text=True, check=False
        )
        assert result.returncode != 0, case.name


def test_the_schema_carries_the_validators_grammars() -> None:
    check = validator()
    base = {"model": {"name": "iris-rf"}}
    for bad in (
        {"model": {"name": "Iris"}},
        {**base, "python": {"version": "3.x"}},
        {**base, "system_packages": {"serve": ["curl;rm"]}},
        {**base, "images": {"labels": {"io.mreg.x": "y"}}},
        {**base, "stages": {"train": {"copy": ["../up"], "output": "/app"}}},
        {**base, "storage": {"uri": "ftp://x"}},
    ):
        assert list(check.iter_errors(bad)), bad
    assert "glibc 2.36" in json.dumps(json.loads(schema_text())["$defs"]["PythonTable"])


# -- GitHub Actions ----------------------------------------------------------------------------------------


def parse_outputs(text: str) -> dict[str, str]:
    """GitHub's `$GITHUB_OUTPUT` format, as the runner reads it (multiline form only)."""
    outputs, lines = {}, iter(text.splitlines())
    for line in lines:
        name, delimiter = line.split("<<", 1)
        value = []
        for item in lines:
            if item == delimiter:
                break
            value.append(item)
        outputs[name] = "\n".join(value)
    return outputs


IMAGES: dict[Stage, BuiltImage] = {
    stage: BuiltImage.pushed(f"registry:5000/ml/iris:{stage}-x", DIGESTS[stage]) for stage in STAGES
}


@pytest.fixture
def actions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    output, summary = tmp_path / "output", tmp_path / "summary"
    output.touch()
    summary.touch()
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    return output, summary


def test_build_outputs_and_summary_inside_actions(actions: tuple[Path, Path]) -> None:
    output, summary = actions
    _github.publish_build(IMAGES, requested=None)
    assert parse_outputs(output.read_text()) == {
        "train-image": f"registry:5000/ml/iris@{DIGESTS['train']}",
        "serve-image": f"registry:5000/ml/iris@{DIGESTS['serve']}",
    }
    assert f"| serve | `registry:5000/ml/iris@{DIGESTS['serve']}` | `registry:5000/ml/iris:serve-x` |" in (
        summary.read_text()
    )
    _github.publish_build(IMAGES, requested=False)  # --no-github-output
    assert len(parse_outputs(output.read_text())) == 2


def test_outputs_need_actions_or_the_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    _github.publish_build(IMAGES, requested=None)  # outside Actions: nothing, no error
    with pytest.raises(InvalidInputError, match="--github-output needs GITHUB_OUTPUT"):
        _github.publish_build(IMAGES, requested=True)
    monkeypatch.setenv("GITHUB_OUTPUT", "relative/file")
    with pytest.raises(InvalidInputError, match="GITHUB_OUTPUT='relative/file': not an absolute path"):
        _github.publish_build(IMAGES, requested=True)


def test_values_are_checked_and_delimiters_are_fresh(actions: tuple[Path, Path]) -> None:
    output, _ = actions
    hostile: dict[Stage, BuiltImage] = {
        "train": BuiltImage(ref="x", image="evil\nversion<<EOF", digest=DIGESTS["train"])
    }
    with pytest.raises(MregError, match="is not one mreg writes; nothing was written"):
        _github.publish_build(hostile, requested=None)
    assert output.read_text() == ""
    text = _github.output_text({"version": "3", "record-digest": DIGESTS["serve"]})
    delimiters = [line.split("<<")[1] for line in text.splitlines() if "<<" in line]
    assert len(set(delimiters)) == 2
    assert parse_outputs(text) == {"version": "3", "record-digest": DIGESTS["serve"]}


def test_summary_cells_cannot_break_the_table() -> None:
    text = _github.summary_text("t", ("a",), [("x | y\n<b>",)])
    assert text.splitlines()[-2] == "| x \\| y &lt;b&gt; |"


def action() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO / "action.yml").read_text())
    return document


def test_action_yml_passes_the_github_actions_schema() -> None:
    argv = [tool("check-jsonschema"), "--builtin-schema", "vendor.github-actions", str(REPO / "action.yml")]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_action_outputs_are_the_steps_outputs() -> None:
    outputs = action()["outputs"]
    assert set(outputs) == {"train-image", "serve-image", "version", "record-digest"}
    assert "steps.register.outputs.record-digest" in outputs["record-digest"]["value"]


def run_step(
    step_id: str, inputs: dict[str, str], *, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run one `run:` step of action.yml as the runner would: its env with `${{ inputs.* }}` filled in,
    by bash with `-eo pipefail`."""
    [step] = [step for step in action()["runs"]["steps"] if step.get("id") == step_id]
    assert step["shell"] == "bash"
    step_env = {
        key: re.sub(r"\$\{\{ inputs\.([a-z-]+) \}\}", lambda m: inputs[m[1]], value)
        for key, value in step.get("env", {}).items()
    }
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        cwd=cwd,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **step_env, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_actions_register_step_writes_the_outputs(tmp_path: Path) -> None:
    project = copy_example(tmp_path / "project")
    save_build(project)
    (project / "model.joblib").write_bytes(b"a model" * 100)
    files = {"GITHUB_OUTPUT": tmp_path / "output", "GITHUB_STEP_SUMMARY": tmp_path / "summary"}
    for path in files.values():
        path.touch()
    env = {"GITHUB_ACTIONS": "true", **{name: str(path) for name, path in files.items()}}
    inputs = {"spec": "registry.toml", "model": "model.joblib"}
    result = run_step("register", inputs, cwd=project, env=env)
    assert result.returncode == 0, result.stderr
    outputs = parse_outputs(files["GITHUB_OUTPUT"].read_text())
    record = Registry.from_spec(load_spec(project / "registry.toml")).get("iris-rf:1")
    assert outputs == {
        "version": "1",
        "record-digest": record.digest,
        "train-image": DIGESTS["train"],
        "serve-image": DIGESTS["serve"],
    }
    assert f"| record digest | `{record.digest}` |" in files["GITHUB_STEP_SUMMARY"].read_text()
    empty = run_step("register", {**inputs, "model": ""}, cwd=project, env=env)
    assert empty.returncode == 2
    assert "the input model is empty" in empty.stderr


def test_the_readme_workflow_uses_the_action_and_passes_actionlint(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## In CI", 1)[1].split("\n## ", 1)[0]
    [workflow] = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    steps = yaml.safe_load(workflow)["jobs"]["model"]["steps"]
    assert any(str(step.get("uses", "")).endswith("mreg@v1") for step in steps)
    target = tmp_path / ".github" / "workflows" / "model.yml"
    target.parent.mkdir(parents=True)
    target.write_text(workflow)
    result = subprocess.run(
        [tool("actionlint"), "-no-color", str(target)], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- completion --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shell", "marker"),
    [("bash", "complete -o nosort -F"), ("zsh", "#compdef mreg"), ("fish", "complete --no-files --command mreg")],
)
def test_completion_prints_each_shells_script(shell: str, marker: str) -> None:
    script = mreg("completion", shell, cwd=REPO).stdout
    assert marker in script
    assert "_MREG_COMPLETE" in script


def complete(words: str, *, cwd: Path) -> list[str]:
    """Ask mreg for completions the way the bash script does."""
    env = {"_MREG_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split(" ")) - 1)}
    result = subprocess.run(
        [str(BIN / "mreg")], cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return [line for line in result.stdout.splitlines() if line]


def test_bash_completion_of_commands_model_names_and_aliases(tmp_path: Path) -> None:
    project = copy_example(tmp_path / "project")
    save_build(project)
    (project / "model.joblib").write_bytes(b"a model")
    spec = load_spec(project / "registry.toml")
    pipeline.register(spec, project / "model.joblib", engine=Untouchable)
    Registry.from_spec(spec).alias("iris-rf", "production", 1)
    assert complete("mreg sch", cwd=project) == ["plain,schema"]
    assert complete("mreg show ir", cwd=project) == ["plain,iris-rf"]
    assert complete("mreg pull iris-rf@p", cwd=project) == ["plain,iris-rf@production"]
    assert complete("mreg --spec nowhere.toml show ir", cwd=project) == []  # no registry: nothing, no error


# -- help --------------------------------------------------------------------------------------------------


def test_every_command_has_a_whole_one_line_summary_and_an_example() -> None:
    from mreg.cli import cli

    for name, command in cli.commands.items():
        first = (command.help or "").split("\n\n", 1)[0]
        assert "\n" not in first, f"{name}: the summary spans lines: {first!r}"
        assert first.endswith("."), f"{name}: {first!r}"
        assert command.get_short_help_str(limit=60) in (first, first.removesuffix(".")), f"{name}: too long for --help"
        assert "Example: `mreg " in " ".join((command.help or "").split()), f"{name}: no example"


# -- progress ----------------------------------------------------------------------------------------------

PROBE = """
import sys, time
from mreg.cli._app import Report, transfer_progress
report = Report()
with report.phase("building train") as phase:
    phase.line("#1 DONE 0.1s")
with transfer_progress(2_000_000, "uploading model.joblib") as advance:
    for _ in range(20):
        time.sleep(0.01)
        advance(100_000)
print("rich" in sys.modules)
"""


def test_plain_progress_is_one_line_per_phase_with_its_duration() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    lines = result.stderr.splitlines()  # stderr is a pipe here, as in CI
    assert re.fullmatch(r"mreg: building train: done in \d+\.\d s", lines[0])
    assert re.fullmatch(r"mreg: uploading model\.joblib: 2\.0 MB in \d+\.\d s \(\d+\.\d MB/s\)", lines[1])
    assert len(lines) == 2
    assert result.stdout.strip() == "False"  # rich is for terminals only


def test_progress_on_a_terminal_is_live_with_bytes_rate_and_time_left() -> None:
    primary, secondary = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "TERM": "xterm"}
    with subprocess.Popen([sys.executable, "-c", PROBE], stderr=secondary, stdout=subprocess.PIPE, env=env) as proc:
        os.close(secondary)
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        proc.wait(timeout=30)
    os.close(primary)
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    assert "building train" in screen
    assert "uploading model.joblib" in screen
    assert "2.0/2.0 MB" in screen
    assert re.search(r"\d+(\.\d)? [kM]B/s", screen)
    assert re.search(r"\d:\d\d:\d\d", screen)  # time left / elapsed


def test_quiet_prints_only_the_result(tmp_path: Path) -> None:
    loud = mreg("schema", "-o", str(tmp_path / "a.json"), cwd=REPO)
    assert loud.stderr == f"wrote {tmp_path / 'a.json'}\n"
    quiet = mreg("--quiet", "schema", "-o", str(tmp_path / "b.json"), cwd=REPO)
    assert quiet.stderr == ""
    assert (tmp_path / "b.json").read_text() == (tmp_path / "a.json").read_text()
    project = copy_example(tmp_path / "project")
    save_build(project)
    (project / "model.joblib").write_bytes(b"m" * 10_000)
    registered = mreg("-q", "register", "model.joblib", cwd=project)
    assert registered.stderr == ""
    assert registered.stdout.startswith("registered iris-rf:1 ")
    assert mreg("register", "model.joblib", cwd=project).stderr.startswith("mreg: uploading: 10.0 kB in ")


def test_a_completion_script_is_shell_syntax(tmp_path: Path) -> None:
    script = tmp_path / "mreg.bash"
    script.write_text(mreg("completion", "bash", cwd=REPO).stdout)
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
