"""What a version carries from register time: metrics, params, datasets and the run URL, inside the record
(under its digest), refused with exact messages when malformed; records without them keep their digests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mreg.errors import IntegrityError
from mreg.records import decode_record
from tests.support import copy_example, make_record, mreg_in_process, save_build

HEX = "ab" * 32
KEY_RULE = "a key is 1-128 lower-case letters, digits, '.', '_', '/' or '-', starting with a letter or digit"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    project = copy_example(tmp_path / "project")
    save_build(project)
    (project / "model.joblib").write_bytes(b"a model" * 100)
    return project


def register(project: Path, monkeypatch: pytest.MonkeyPatch, *options: str) -> tuple[int, str, str]:
    return mreg_in_process("register", "model.joblib", "--json", *options, cwd=project, monkeypatch=monkeypatch)


def test_a_record_without_metadata_keeps_the_digest_it_had() -> None:
    sealed = make_record(1).sealed()
    assert sealed.digest == "sha256:4a8b1bed66828c1b6828168a48c24422a8083c05a874bdc9bfe3aee26fb057ca"
    keys = set(json.loads(sealed.to_json()))
    assert not keys & {"metrics", "params", "datasets", "run_url", "base_image"}


def test_metadata_is_recorded_under_the_digest(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "metrics.json").write_text('{"accuracy": 0.97, "loss": 1}')
    code, out, err = register(
        project,
        monkeypatch,
        "--metrics", "metrics.json",
        "--metric", "f1=0.5",
        "--param", "max_depth=8",
        "--param", "criterion=gini=x",
        "--dataset", f"s3://data/iris.csv@sha256:{HEX}",
        "--dataset", "https://example.com/extra.parquet",
        "--run-url", "https://ci.example.com/runs/7",
    )  # fmt: skip
    assert code == 0, err
    record = json.loads(out)
    assert record["metrics"] == {"accuracy": 0.97, "loss": 1.0, "f1": 0.5}
    assert record["params"] == {"max_depth": "8", "criterion": "gini=x"}
    assert record["datasets"] == [
        {"uri": "s3://data/iris.csv", "sha256": HEX},
        {"uri": "https://example.com/extra.parquet"},
    ]
    assert record["run_url"] == "https://ci.example.com/runs/7"
    assert record["base_image"] == "python:3.11-slim-bookworm"
    stored = project / ".mreg" / "registry" / "iris-rf" / "versions" / "0000000001.json"
    assert decode_record(stored.read_bytes(), "v1").metrics["accuracy"] == 0.97
    edited = stored.read_text().replace("0.97", "0.99")
    with pytest.raises(IntegrityError, match="was changed after it was written"):
        decode_record(edited.encode(), "v1")


def test_the_run_url_defaults_to_the_github_actions_run(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "team/iris")
    monkeypatch.setenv("GITHUB_RUN_ID", "42")
    code, out, _ = register(project, monkeypatch)
    assert code == 0
    assert json.loads(out)["run_url"] == "https://github.com/team/iris/actions/runs/42"
    code, out, _ = register(project, monkeypatch, "--run-url", "https://mlflow.example.com/runs/1")
    assert json.loads(out)["run_url"] == "https://mlflow.example.com/runs/1"


BAD = [
    (["--metric", "acc=nan"], "--metric acc=nan: metric 'acc' is nan; a metric must be a finite number."),
    (["--metric", "acc=inf"], "--metric acc=inf: metric 'acc' is inf; a metric must be a finite number."),
    (["--metric", "acc=-Infinity"], "--metric acc=-Infinity: metric 'acc' is -inf; a metric must be a finite number."),
    (["--metric", "acc=1e999"], "--metric acc=1e999: metric 'acc' is inf; a metric must be a finite number."),
    (["--metric", "acc=high"], "--metric acc=high: metric 'acc' is 'high'; a metric must be a finite number."),
    (["--metric", "acc"], "--metric acc: expected KEY=VALUE."),
    (["--metric", "Acc=1"], f"--metric Acc=1: metric key 'Acc' is invalid: {KEY_RULE}."),
    (["--metric", "../x=1"], f"--metric ../x=1: metric key '../x' is invalid: {KEY_RULE}."),
    (["--metric", "a=1", "--metric", "a=2"], "--metric a=2: metric 'a' is given twice."),
    (["--metrics", "nan.json"], "nan.json: metric 'acc' is nan; a metric must be a finite number."),
    (["--metrics", "text.json"], "text.json: metric 'acc' is 'high'; a metric must be a finite number."),
    (["--metrics", "bool.json"], "bool.json: metric 'ok' is True; a metric must be a finite number."),
    (["--metrics", "list.json"], "list.json: expected a JSON object of metric names and numbers."),
    (["--metrics", "nested.json"], "nested.json: metric 'a' is {'b': 1}; a metric must be a finite number."),
    (["--metrics", "missing.json"], "missing.json: cannot be read (No such file or directory)."),
    (["--param", "lr"], "--param lr: expected KEY=VALUE."),
    (["--param", "LR=1"], f"--param LR=1: param key 'LR' is invalid: {KEY_RULE}."),
    (["--param", "x=" + "a" * 1025],
     f"--param x={'a' * 75}...: param 'x' is 1025 characters long; at most 1024 are allowed."),
    (["--param", "x=a\x07"], "--param x=a\\x07: param 'x' holds a control character."),
    (["--dataset", "data.csv"],
     "--dataset data.csv: the dataset URI 'data.csv' is not a URI (SCHEME://..., without spaces)."),
    (["--dataset", "s3://b/my data"],
     "--dataset s3://b/my data: the dataset URI 's3://b/my data' is not a URI (SCHEME://..., without spaces)."),
    (["--dataset", "s3://b/k@sha256:abc"],
     "--dataset s3://b/k@sha256:abc: the dataset digest 'sha256:abc' is not sha256: followed by 64 lower-case hex "
     "digits."),
    (["--run-url", "ftp://ci/run"], "--run-url: the run URL 'ftp://ci/run' is not an http:// or https:// URL."),
    (["--run-url", "https://ci/run 1"], "--run-url: the run URL 'https://ci/run 1' is not an http:// or https:// URL."),
]  # fmt: skip


@pytest.mark.parametrize(("options", "message"), BAD, ids=[" ".join(options)[:40] for options, _ in BAD])
def test_bad_metadata_is_refused_before_any_upload(
    project: Path, monkeypatch: pytest.MonkeyPatch, options: list[str], message: str
) -> None:
    (project / "nan.json").write_text('{"acc": NaN}')
    (project / "text.json").write_text('{"acc": "high"}')
    (project / "bool.json").write_text('{"ok": true}')
    (project / "list.json").write_text("[1]")
    (project / "nested.json").write_text('{"a": {"b": 1}}')
    code, out, err = register(project, monkeypatch, *options)
    assert (code, out) == (2, "")
    assert err == f"error: {message}\n"
    assert not (project / ".mreg" / "objects").exists()
    assert not (project / ".mreg" / "registry").exists()


def test_too_many_metrics_are_refused(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "many.json").write_text(json.dumps({f"m{n}": n for n in range(257)}))
    code, _, err = register(project, monkeypatch, "--metrics", "many.json")
    assert code == 2
    assert err == "error: many.json: 257 metrics; at most 256 are allowed.\n"
