"""registry.toml validation: good specs load, bad ones fail with a message naming file, key and value."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from pydantic import ValidationError

from mreg.errors import SpecError
from mreg.spec import DEFAULT_REGISTRY_URI, DEFAULT_STORAGE_URI, Spec, load_spec

REPO = Path(__file__).resolve().parents[2]
MINIMAL = '[model]\nname = "iris"\n'
NAME_RULE = (
    "1-64 lower-case letters and digits, in words joined by '.', '_', '__' or dashes; it starts and ends with a "
    "letter or digit"
)


def packaging_reason(text: str) -> str:
    """packaging's own wording of why `text` is no requirement (it changes between its releases)."""
    with pytest.raises(InvalidRequirement) as caught:
        Requirement(text)
    return str(caught.value).splitlines()[0]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registry.toml"
    path.write_text(text)
    return path


def refusal(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert caught.value.exit_code == 2
    return str(caught.value).replace(str(path), "registry.toml")


def test_bundled_example_loads() -> None:
    spec = load_spec(REPO / "registry.toml")
    assert spec.model.name == "iris-rf"
    assert "scikit-learn==1.3.2" in spec.packages.shared
    assert spec.stages.train.copy_ == ["examples/iris/train.py"]
    assert spec.root == REPO


def test_defaults(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, MINIMAL))
    assert spec.python.version == "3.11"
    assert spec.python.image == "python:3.11-slim-bookworm"
    assert spec.packages.shared == spec.packages.train == spec.packages.serve == []
    assert spec.images.repository is None
    assert spec.storage.uri == DEFAULT_STORAGE_URI
    assert spec.registry.uri == DEFAULT_REGISTRY_URI
    assert spec.state_dir == tmp_path / ".mreg"


def test_base_image_follows_python_version(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, MINIMAL + '[python]\nversion = "3.12"\n'))
    assert spec.python.image == "python:3.12-slim-bookworm"


def test_requirements_are_normalised(tmp_path: Path) -> None:
    text = MINIMAL + "[packages]\nshared = [\"numpy >= 1.26 ; python_version >= '3.9'\"]\n"
    spec = load_spec(write(tmp_path, text))
    assert spec.packages.shared == ['numpy>=1.26; python_version >= "3.9"']


def test_digest_ignores_comments_and_key_order(tmp_path: Path) -> None:
    first = load_spec(write(tmp_path, MINIMAL + '[python]\nversion = "3.11"\nbase_image = "python:3.11"\n'))
    second = load_spec(
        write(tmp_path, '# a comment\n[python]\nbase_image = "python:3.11"\nversion = "3.11"\n' + MINIMAL)
    )
    third = load_spec(write(tmp_path, MINIMAL + '[python]\nversion = "3.11"\nbase_image = "python:3.12"\n'))
    assert first.digest() == second.digest() != third.digest()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[model]\n",
            "registry.toml: model.name: is required but missing.",
        ),
        (
            "",
            "registry.toml: model: is required but missing.",
        ),
        (
            MINIMAL + "colour = 'blue'\n",
            'registry.toml: model.colour = "blue": is not a known key (allowed: name).',
        ),
        (
            MINIMAL + "[pakages]\nshared = []\n",
            "registry.toml: pakages = {...}: is not a known key (allowed: model, python, packages, "
            "system_packages, images, stages, storage, registry, render).",
        ),
        *(
            (
                f'[model]\nname = "{name}"\n',
                f'registry.toml: model.name = "{name}": is not a valid model name ({NAME_RULE}).',
            )
            for name in ("Iris", "a/b", "a..b", "a" * 65, "iris-", "a._b", "a___b", "-a", "")
        ),
        (
            MINIMAL + "[python]\nversion = 3.11\n",
            "registry.toml: python.version = 3.11: input should be a valid string.",
        ),
        (
            MINIMAL + '[python]\nversion = "3"\n',
            'registry.toml: python.version = "3": is not a Python version of the form "3.X".',
        ),
        (
            MINIMAL + '[python]\nbase_image = "python:3.11 AS evil"\n',
            'registry.toml: python.base_image = "python:3.11 AS evil": is not a valid image reference '
            "([registry[:port]/]name[:tag][@digest], lower-case path).",
        ),
        (
            MINIMAL + '[packages]\nshared = ["scikit-learn=1.3.2"]\n',
            'registry.toml: packages.shared[0] = "scikit-learn=1.3.2": is not a valid PEP 508 requirement '
            f"({packaging_reason('scikit-learn=1.3.2')}).",
        ),
        (
            MINIMAL + '[packages]\ntrain = ["numpy", "--extra-index-url=http://evil"]\n',
            'registry.toml: packages.train[1] = "--extra-index-url=http://evil": is not a valid PEP 508 '
            f"requirement ({packaging_reason('--extra-index-url=http://evil')}).",
        ),
        (
            MINIMAL + '[packages]\nserve = ["numpy; rm -rf /"]\n',
            'registry.toml: packages.serve[0] = "numpy; rm -rf /": is not a valid PEP 508 requirement '
            f"({packaging_reason('numpy; rm -rf /')}).",
        ),
        (
            MINIMAL + '[packages]\nshared = ["pkg @ https://example.com/pkg.whl"]\n',
            'registry.toml: packages.shared[0] = "pkg @ https://example.com/pkg.whl": is a direct URL '
            "requirement; mreg installs from package indexes only.",
        ),
        (
            MINIMAL + '[packages]\nshared = ["scikit-learn==1.3.2"]\nserve = ["Scikit_Learn>=1"]\n',
            'registry.toml: packages.serve[0] = "Scikit_Learn>=1": declares scikit-learn again '
            "(already in packages.shared[0]).",
        ),
        (
            MINIMAL + '[packages]\ntrain = ["numpy", "numpy<2"]\n',
            'registry.toml: packages.train[1] = "numpy<2": declares numpy again (already in packages.train[0]).',
        ),
        (
            MINIMAL + '[packages]\nshared = "numpy"\n',
            'registry.toml: packages.shared = "numpy": input should be a valid list.',
        ),
        (
            MINIMAL + '[system_packages]\nshared = ["curl && rm -rf /"]\n',
            'registry.toml: system_packages.shared[0] = "curl && rm -rf /": is not a valid Debian package '
            "name (2 or more characters: lower-case letters, digits, '+', '-', '.', starting with a letter "
            "or digit).",
        ),
        (
            MINIMAL + '[system_packages]\nserve = ["-oAPT::Foo=1"]\n',
            'registry.toml: system_packages.serve[0] = "-oAPT::Foo=1": is not a valid Debian package name '
            "(2 or more characters: lower-case letters, digits, '+', '-', '.', starting with a letter or "
            "digit).",
        ),
        (
            MINIMAL + '[system_packages]\nshared = ["curl"]\ntrain = ["curl"]\n',
            'registry.toml: system_packages.train[0] = "curl": declares curl again '
            "(already in system_packages.shared[0]).",
        ),
        (
            MINIMAL + '[images]\nrepository = "localhost:5000/iris:latest"\n',
            'registry.toml: images.repository = "localhost:5000/iris:latest": is not a valid image '
            "repository ([registry[:port]/]path, lower-case, no tag or digest).",
        ),
        (
            MINIMAL + '[images.labels]\n"org.opencontainers.image.title" = "x"\n',
            'registry.toml: images.labels."org.opencontainers.image.title": the key '
            '"org.opencontainers.image.title" is reserved: mreg sets the io.mreg.* and '
            "org.opencontainers.image.* labels itself.",
        ),
        (
            MINIMAL + '[images.labels]\n"Team Name" = "x"\n',
            'registry.toml: images.labels."Team Name": the key "Team Name" is not a valid label key '
            "(at most 128 lower-case letters and digits separated by '.', '-' or '_').",
        ),
        (
            MINIMAL + '[images.labels]\nteam = "a\\nFROM scratch"\n',
            'registry.toml: images.labels.team = "a\\nFROM scratch": contains a control or line-separator character.',
        ),
        (
            MINIMAL + "[packages]\nshared = ['numpy; os_name == \"\\x1b[2J\"']\n",
            'registry.toml: packages.shared[0] = "numpy; os_name == \\"\\\\x1b[2J\\"": holds a backslash; escapes '
            "are not part of PEP 508 and are refused.",
        ),
        (
            MINIMAL + '[python]\nbase_image = "uv"\n',
            'registry.toml: python.base_image = "uv": names a stage of mreg\'s Dockerfile (uv, base, train, serve); '
            "write the image in full, e.g. docker.io/library/uv:latest.",
        ),
        (
            'model = "iris"\n',
            'registry.toml: model = "iris": should be a table.',
        ),
        (
            MINIMAL + '[stages.train]\ncopy = ["../secrets"]\n',
            'registry.toml: stages.train.copy[0] = "../secrets": is not a relative path of plain names '
            "(letters, digits, '.', '_', '-' separated by '/'; no '..', no leading '/' or '-').",
        ),
        (
            MINIMAL + '[stages.train]\ncopy = ["/etc/passwd"]\n',
            'registry.toml: stages.train.copy[0] = "/etc/passwd": is not a relative path of plain names '
            "(letters, digits, '.', '_', '-' separated by '/'; no '..', no leading '/' or '-').",
        ),
        (
            MINIMAL + '[stages.serve]\ncopy = ["missing.py"]\n',
            'registry.toml: stages.serve.copy[0] = "missing.py": does not exist (looked for {root}/missing.py).',
        ),
        (
            MINIMAL + "[stages.serve]\ncommand = []\n",
            "registry.toml: stages.serve.command = []: list should have at least 1 item after validation, not 0.",
        ),
        (
            MINIMAL + '[storage]\nuri = "ftp://models"\n',
            'registry.toml: storage.uri = "ftp://models": is not a supported store URI (use file://PATH, '
            "s3://BUCKET/PREFIX or gs://BUCKET/PREFIX).",
        ),
        (
            MINIMAL + '[registry]\nuri = "s3://My_Bucket/x"\n',
            "registry.toml: registry.uri = \"s3://My_Bucket/x\": names an invalid bucket 'My_Bucket' (3-63 lower-case "
            "letters, digits, '.', '-').",
        ),
        (
            MINIMAL + '[storage]\nuri = "s3://models/a/../b"\n',
            "registry.toml: storage.uri = \"s3://models/a/../b\": has an invalid prefix (letters, digits, '.', '_', "
            "'-' separated by '/'; no '..').",
        ),
        (
            MINIMAL + '[storage]\nuri = "s3://models/m"\nendpoint_url = "http://key:secret@127.0.0.1:9000"\n',
            'registry.toml: storage.endpoint_url = "http://key:secret@127.0.0.1:9000": holds credentials; mreg takes '
            "them from boto3's configuration chain, never from the spec.",
        ),
        (
            MINIMAL + '[registry]\nendpoint_url = "ftp://127.0.0.1"\n',
            'registry.toml: registry.endpoint_url = "ftp://127.0.0.1": is not an http(s)://HOST[:PORT] endpoint URL.',
        ),
        (
            MINIMAL + "[python\n",
            "registry.toml: invalid TOML: Expected ']' at the end of a table declaration (at line 3, column 8).",
        ),
    ],
)
def test_refusals(tmp_path: Path, text: str, message: str) -> None:
    assert refusal(tmp_path, text) == message.replace("{root}", str(tmp_path.resolve()))


def test_every_problem_is_reported(tmp_path: Path) -> None:
    text = '[model]\nname = "A"\n[python]\nversion = "2.7"\n'
    assert refusal(tmp_path, text).splitlines() == [
        f'registry.toml: model.name = "A": is not a valid model name ({NAME_RULE}).',
        'registry.toml: python.version = "2.7": is not a Python version of the form "3.X".',
    ]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"registry.toml: file not found"):
        load_spec(tmp_path / "registry.toml")


def test_copy_through_symlink_outside_the_project_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "secret.txt").write_text("s3cr3t")
    (project / "innocent.py").symlink_to(tmp_path / "secret.txt")
    text = MINIMAL + '[stages.train]\ncopy = ["innocent.py"]\n'
    message = refusal(project, text)
    assert message == (
        f'registry.toml: stages.train.copy[0] = "innocent.py": resolves outside {project.resolve()} '
        "(through a symbolic link)."
    )


def test_same_basename_copied_twice_is_refused(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "app.py").write_text("")
    message = refusal(tmp_path, MINIMAL + '[stages.serve]\ncopy = ["a/app.py", "b/app.py"]\n')
    assert message == (
        'registry.toml: stages.serve.copy[1] = "b/app.py": would overwrite /app/app.py, already copied by '
        "stages.serve.copy[0]."
    )


def test_models_built_without_load_spec_refuse_control_characters() -> None:
    data = {"model": {"name": "iris"}, "images": {"labels": {"team": "a\x0bFROM scratch"}}}
    with pytest.raises(ValidationError) as caught:
        Spec.model_validate(data)
    assert 'images.labels.team = "a\\u000bFROM scratch": contains a control or line-separator character.' in str(
        caught.value
    )
