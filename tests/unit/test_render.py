"""Rendering: golden Dockerfiles, determinism, hostile values quoted, user templates."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import dockerfile
import pytest

from mreg import render as render_module
from mreg.errors import SpecError
from mreg.lock import load_lock
from mreg.render import BuildContext, render
from mreg.spec import Spec, load_spec
from tests.support import make_lock
from tests.support.golden import GOLDEN, check_golden

REPO = Path(__file__).resolve().parents[2]

HOSTILE = """
[model]
name = "evil"
[packages]
shared = ["numpy>=1.26; platform_release == \\"$(touch /tmp/pwned)'\\"", "requests[socks]>=2 ; os_name != \\"`id`\\""]
serve = ["flask"]
[system_packages]
serve = ["libpq5", "g++"]
[images.labels]
"note" = "it's \\"quoted\\" $HOME ${PATH} \\\\ back`id`"
[stages.serve]
command = ["sh", "-c", "echo \\"$HOME\\" && exit 0"]
"""


def instructions(text: str) -> list[str]:
    return [command.cmd for command in dockerfile.parse_string(text)]


def spec_from(tmp_path: Path, text: str) -> Spec:
    path = tmp_path / "registry.toml"
    path.write_text(text)
    return load_spec(path)


def example(*, buildkit: bool = True) -> BuildContext:
    spec = load_spec(REPO / "registry.toml")
    return render(spec, load_lock(spec), buildkit=buildkit)


def render_unlocked(spec: Spec, pins: dict[str, dict[str, str]] | None = None) -> BuildContext:
    """Render with a made-up lock: by default one pin per set."""
    sets = pins or {"base": {"numpy": "1.26.4"}, "train": {"numpy": "1.26.4", "pandas": "2.1.4"},
                    "serve": {"numpy": "1.26.4", "flask": "3.0.0"}, "tools": {"uv": "0.13.9"}}  # fmt: skip
    return render(spec, make_lock(spec, sets))


def test_golden_example_buildkit() -> None:
    check_golden("iris.Dockerfile", example().dockerfile)


def test_golden_example_classic() -> None:
    check_golden("iris.classic.Dockerfile", example(buildkit=False).dockerfile)


def test_context_holds_the_lock_sets_as_hash_pinned_requirements() -> None:
    context = example()
    requirements = [f"requirements/{name}.txt" for name in ("base", "serve", "tools", "train")]
    assert sorted(context.generated) == ["mreg/bytecode.py", *requirements]  # (the install steps' bytecode script)
    for line in context.generated["requirements/serve.txt"].splitlines():
        assert re.fullmatch(r"[a-z0-9-]+==\S+( --hash=sha256:[0-9a-f]{64})+", line), line
    assert "scikit-learn==1.3.2 " in context.generated["requirements/base.txt"]
    assert "pandas==" not in context.generated["requirements/serve.txt"]


def test_a_stage_with_nothing_of_its_own_installs_nothing_more(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, '[model]\nname = "m"\n[packages]\nshared = ["numpy"]\n')
    base = {"numpy": "1.26.4"}
    text = render_unlocked(spec, {"base": base, "train": base, "serve": base, "tools": {"uv": "0.13.9"}}).dockerfile
    assert text.count("uv pip sync") == 1


def test_stages_and_instruction_order() -> None:
    text = example().dockerfile
    stages = [c.value[-1] for c in dockerfile.parse_string(text) if c.cmd == "FROM"]
    inventories = ["train-inventory-run", "train-inventory", "serve-inventory-run", "serve-inventory"]
    assert stages == ["uv", "base", "train", "serve", *inventories]
    assert example().stages() == stages
    serve = text[text.index("FROM base AS serve") : text.index("FROM train AS train-inventory-run")]
    # cache-friendly order: system packages, then Python packages, then code, labels last
    assert serve.index("apt-get install") < serve.index("uv pip sync") < serve.index("COPY") < serve.index("LABEL")
    assert instructions(serve)[-1] == "LABEL"


def test_only_the_configured_index_secrets_are_mounted() -> None:
    spec = load_spec(REPO / "registry.toml")
    without = render(spec, load_lock(spec))
    assert "type=secret" not in without.dockerfile
    assert "/run/secrets" not in without.dockerfile
    extra = render(spec, load_lock(spec), index_secrets={"mreg-extra-index-url"}).dockerfile
    installs = [c.original for c in dockerfile.parse_string(extra) if "/tmp/mreg-requirements.txt" in c.original]
    assert len(installs) == 3
    for install in installs:
        assert "--mount=type=secret,id=mreg-extra-index-url,required=false" in install
        assert 'export UV_EXTRA_INDEX_URL="$(cat /run/secrets/mreg-extra-index-url)"' in install
        assert "mreg-index-url" not in install
    assert extra.count("type=secret") == 3  # the install steps only
    both = render(spec, load_lock(spec), index_secrets={"mreg-index-url", "mreg-extra-index-url"})
    assert both.dockerfile.count("type=secret") == 6
    one = render(spec, load_lock(spec), index_secrets={"mreg-extra-index-url"})
    assert len({without.tag("serve"), one.tag("serve"), both.tag("serve")}) == 3


def test_same_spec_same_bytes_whatever_the_order(tmp_path: Path) -> None:
    a = spec_from(tmp_path, '[model]\nname = "m"\n[packages]\nshared = ["b==1", "a==2"]\n')
    first = render_unlocked(a)
    b = spec_from(tmp_path, '[packages]\nshared = ["a==2", "b==1"]\n[model]\nname = "m"\n')
    second = render_unlocked(b)
    assert first.dockerfile.encode() == second.dockerfile.encode()
    assert first.tag("train") == render_unlocked(a).tag("train")


def test_tag_follows_the_lock(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, '[model]\nname = "m"\n')
    one = render_unlocked(spec, {"base": {"numpy": "1.26.4"}, "tools": {"uv": "0.13.9"}})
    other = render_unlocked(spec, {"base": {"numpy": "1.26.3"}, "tools": {"uv": "0.13.9"}})
    assert one.tag("serve") != other.tag("serve")


def test_each_image_is_tagged_by_what_it_is_built_from(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, '[model]\nname = "m"\n')
    tools = {"uv": "0.13.9"}
    base = {"numpy": "1.26.4"}
    serve = {**base, "flask": "3.0.0"}
    before = render_unlocked(spec, {"base": base, "train": base, "serve": serve, "tools": tools})
    after = {"base": base, "train": base, "serve": {**serve, "six": "1.16"}, "tools": tools}
    serve_change = render_unlocked(spec, after)
    assert serve_change.tag("train") == before.tag("train")
    assert serve_change.tag("serve") != before.tag("serve")
    assert serve_change.digest() != before.digest()
    base_change = render_unlocked(spec, {"base": {"numpy": "2.0"}, "train": base, "serve": serve, "tools": tools})
    assert base_change.tag("train") != before.tag("train")
    assert base_change.tag("serve") != before.tag("serve")


def test_tag_follows_copied_file_content(tmp_path: Path) -> None:
    (tmp_path / "serve.py").write_text("print(1)\n")
    spec = spec_from(tmp_path, '[model]\nname = "m"\n[stages.serve]\ncopy = ["serve.py"]\n')
    before = render_unlocked(spec).tag("serve")
    (tmp_path / "serve.py").write_text("print(2)\n")
    after = render_unlocked(spec).tag("serve")
    assert before != after
    assert before.startswith("serve-")
    assert len(before) == len("serve-") + 16


def test_context_holds_every_copied_file(tmp_path: Path) -> None:
    package = tmp_path / "src" / "pkg"
    (package / "__pycache__").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "model.py").write_text("x = 1\n")
    (package / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\0")
    spec = spec_from(tmp_path, '[model]\nname = "m"\n[stages.train]\ncopy = ["src/pkg"]\n')
    context = render_unlocked(spec)
    assert sorted(context.files) == ["stages/train/pkg/__init__.py", "stages/train/pkg/model.py"]
    assert 'COPY ["stages/train/pkg", "/app/pkg"]' in context.dockerfile
    out = tmp_path / "context"
    context.write(out)
    assert (out / "Dockerfile").read_text() == context.dockerfile
    assert (out / "stages/train/pkg/model.py").read_text() == "x = 1\n"


def test_hostile_values_stay_inside_their_quotes(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, HOSTILE)
    text = render_unlocked(spec).dockerfile
    check_golden("hostile.Dockerfile", text)
    benign = spec_from(tmp_path, '[model]\nname = "evil"\n[packages]\nshared = ["a"]\nserve = ["b"]\n'
                       '[system_packages]\nserve = ["cc", "dd"]\n[stages.serve]\ncommand = ["x"]\n')  # fmt: skip
    assert instructions(text) == instructions(render_unlocked(benign).dockerfile)
    # requirement strings never reach the Dockerfile: the build installs the lock's pins from files
    assert "platform_release" not in text
    # system packages reach a shell line as whole words, unexpanded
    apt = next(c for c in dockerfile.parse_string(text) if c.cmd == "RUN" and "apt-get install" in c.value[0])
    words = shlex.split(apt.value[0])
    assert words[-2:] == ["g++", "libpq5"]
    cmd = next(c for c in dockerfile.parse_string(text) if c.cmd == "CMD")
    assert cmd.json
    assert list(cmd.value) == ["sh", "-c", 'echo "$HOME" && exit 0']


def test_user_template_extends_the_builtin_one(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "Dockerfile.j2").write_text(
        '{% extends "mreg/Dockerfile.j2" %}\n'
        "{% block serve %}{{ super() }}\nHEALTHCHECK CMD {{ ['curl', '-f', 'http://127.0.0.1:8080/'] | json }}\n"
        "{% endblock %}\n"
    )
    spec = spec_from(tmp_path, '[model]\nname = "m"\n[render]\ntemplate_dir = "templates"\n')
    text = render_unlocked(spec).dockerfile
    serve = text[text.index("FROM base AS serve") : text.index("FROM train AS train-inventory-run")]
    assert instructions(serve)[-1] == "HEALTHCHECK"
    assert 'HEALTHCHECK CMD ["curl", "-f", "http://127.0.0.1:8080/"]' in text


def test_user_template_with_an_unknown_variable_is_refused(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "Dockerfile.j2").write_text("FROM {{ base_imag }}\n")
    spec = spec_from(tmp_path, '[model]\nname = "m"\n[render]\ntemplate_dir = "templates"\n')
    with pytest.raises(SpecError) as caught:
        render_unlocked(spec)
    assert str(caught.value) == f"{templates.resolve()}/Dockerfile.j2: cannot be rendered: 'base_imag' is undefined."


@pytest.mark.parametrize("usable", [True, False])
def test_compiled_templates_are_cached_and_a_broken_cache_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, usable: bool
) -> None:
    directory = tmp_path / "cache"
    if usable:
        directory.mkdir()
    else:
        directory.write_text("")  # a file: the cache can be neither read nor written
    monkeypatch.setattr(render_module, "_bytecode_cache", lambda: render_module._TemplateCache(str(directory)))
    dockerfiles = []
    for _ in range(2):  # compiled, then (when usable) loaded from the cache
        render_module._environment.cache_clear()
        dockerfiles.append(example().dockerfile)
    render_module._environment.cache_clear()
    assert dockerfiles == [(GOLDEN / "iris.Dockerfile").read_text()] * 2
    if usable:
        assert len(list(directory.iterdir())) == 2  # Dockerfile.j2 and _macros.j2
