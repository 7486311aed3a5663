"""The container command lines are pure functions of a checked request: no shell, every value one argument,
the environment's values outside argv; and hostile values are refused before any backend sees them."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mreg.engine.buildx import create_argv, env_file_text, logs_argv, mount_option, stop_argvs
from mreg.engine.containers import ContainerExit, ContainerRequest, ContainerState, Mount, check_request
from mreg.engine.dockersdk import _lines, create_arguments
from mreg.errors import InvalidInputError

IMAGE = "127.0.0.1:5000/iris-rf@sha256:" + "a" * 64


def request(**changes: object) -> ContainerRequest:
    values: dict[str, object] = {
        "image": IMAGE,
        "name": "mreg-serve-iris-rf-1-abc123",
        "mounts": (Mount(Path("/cache/models/abc/file"), "/mnt/models/model.joblib"),),
        "env": {"PORT": "8080", "MREG_MODEL_SHA256": "f" * 64},
        "network": "host",
        "labels": {"io.mreg.role": "serve", "io.mreg.model": "iris-rf"},
    }
    values.update(changes)
    return ContainerRequest(**values)  # type: ignore[arg-type]


def test_create_argv_is_a_plain_argument_list_with_the_image_after_the_separator() -> None:
    argv = create_argv(
        request(command=("python", "train.py", "--seed", "$(id)"), user="1000:1000"), env_file=Path("/tmp/e/env")
    )
    assert argv == [
        "docker", "create", "--name", "mreg-serve-iris-rf-1-abc123",
        "--label", "io.mreg.model=iris-rf", "--label", "io.mreg.role=serve",
        "--network", "host", "--user", "1000:1000", "--env-file", "/tmp/e/env",
        "--mount", "type=bind,source=/cache/models/abc/file,target=/mnt/models/model.joblib,readonly",
        "--", IMAGE, "python", "train.py", "--seed", "$(id)",
    ]  # fmt: skip


def test_without_a_command_the_image_keeps_its_cmd_and_no_value_of_the_environment_is_in_argv() -> None:
    argv = create_argv(request(env={"TOKEN": "s3cr3t-value"}), env_file=Path("/tmp/e/env"))
    assert argv[-2:] == ["--", IMAGE]
    assert not [argument for argument in argv if "s3cr3t" in argument]
    assert "--env-file" in argv
    assert "--env-file" not in create_argv(request(env={}), env_file=None)


def test_the_env_file_passes_values_through_untouched() -> None:
    text = env_file_text({"B": " spaced = and # not a comment ", "A": "", "\ufeffX": "y"})
    assert text.splitlines() == ["# written by mreg", "A=", "B= spaced = and # not a comment ", "\ufeffX=y"]


def test_a_mount_is_one_csv_record_whatever_its_paths_hold() -> None:
    option = mount_option(Mount(Path('/data/a,b"c'), "/out", read_only=False))
    assert next(csv.reader([option])) == ["type=bind", 'source=/data/a,b"c', "target=/out"]
    assert mount_option(Mount(Path("/m"), "/mnt/models")).endswith(",readonly")


def test_logs_and_stop_command_lines() -> None:
    assert logs_argv("abc", follow=True) == ["docker", "logs", "--follow", "--", "abc"]
    assert logs_argv("abc", tail=25) == ["docker", "logs", "--tail", "25", "--", "abc"]
    assert stop_argvs("abc", grace=0) == [["docker", "rm", "--force", "--", "abc"]]
    assert stop_argvs("abc", grace=10) == [
        ["docker", "stop", "--time", "10", "--", "abc"],
        ["docker", "rm", "--force", "--", "abc"],
    ]


def test_the_sdk_gets_the_same_request() -> None:
    arguments = create_arguments(request(command=("python", "serve.py"), user="0:0"))
    [mount] = arguments.pop("mounts")
    assert dict(mount) == {
        "Target": "/mnt/models/model.joblib",
        "Source": "/cache/models/abc/file",
        "Type": "bind",
        "ReadOnly": True,
    }
    assert arguments == {
        "image": IMAGE,
        "name": "mreg-serve-iris-rf-1-abc123",
        "command": ["python", "serve.py"],
        "environment": {"PORT": "8080", "MREG_MODEL_SHA256": "f" * 64},
        "user": "0:0",
        "network_mode": "host",
        "labels": {"io.mreg.role": "serve", "io.mreg.model": "iris-rf"},
    }
    assert create_arguments(request())["command"] is None


def test_sdk_output_chunks_become_lines() -> None:
    assert list(_lines([b"one\ntw", b"o\r\n", b"", b"thr\xffee"])) == ["one", "two", "thr\ufffdee"]


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"image": "--privileged"}, "the image is not a valid image reference"),
        ({"image": "Upper/Case"}, "the image is not a valid image reference"),
        ({"name": "-rm"}, "container name '-rm' is not"),
        ({"name": "a b"}, "container name 'a b' is not"),
        ({"network": "--privileged"}, "network '--privileged' is not"),
        ({"user": "root"}, "user 'root' is not UID:GID"),
        ({"user": "0:0 --privileged"}, "is not UID:GID"),
        ({"env": {"A B": "x"}}, "environment variable name 'A B' is not"),
        ({"env": {"-e": "x"}}, "environment variable name '-e' is not"),
        ({"env": {"A": "x\nB=y"}}, "the value of A holds a line break"),
        ({"env": {"A": "x\rB=y"}}, "the value of A holds a line break"),
        ({"env": {"A": "x\0"}}, "the value of A holds a line break or a NUL"),
        ({"command": ("python", "a\0b")}, "command argument 'a\\x00b' holds a NUL"),
        ({"labels": {"Key": "v"}}, "label key 'Key' is not"),
        ({"labels": {"k": "line\nbreak"}}, "label k holds a control character"),
        ({"mounts": (Mount(Path("relative"), "/out"),)}, "mount source 'relative' is not an absolute path"),
        ({"mounts": (Mount(Path("/a\nb"), "/out"),)}, "is not an absolute path without line breaks"),
        ({"mounts": (Mount(Path("/a"), "out"),)}, "mount target 'out' is not a normalised absolute"),
        ({"mounts": (Mount(Path("/a"), "/mnt/../etc"),)}, "mount target '/mnt/../etc' is not"),
        ({"mounts": (Mount(Path("/a"), "/mnt//models"),)}, "mount target '/mnt//models' is not"),
        ({"mounts": (Mount(Path("/a"), "/mnt/\x1b[2J"),)}, "is not a normalised absolute container path"),
    ],
)
def test_hostile_values_are_refused_before_any_backend_sees_them(changes: dict[str, object], problem: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_request(request(**changes))
    assert problem in str(caught.value)
    assert str(caught.value).startswith("cannot run a container of ")
    assert str(caught.value).endswith(".")


def test_a_checked_request_passes_and_local_image_ids_are_images() -> None:
    assert check_request(request()) == request()
    check_request(request(image="sha256:" + "b" * 64, command=("python", "train.py", "--out", "/out/m; rm -rf /")))


def test_state_and_exit() -> None:
    assert ContainerState("running", 0).running
    assert not ContainerState("exited", 3).running
    assert ContainerExit(3, ("a", "b")).quoted_tail() == "  a\n  b"
    assert ContainerExit(3, ()).quoted_tail() == "  (no output)"
