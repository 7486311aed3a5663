"""The read-only UI's pages through Starlette's TestClient, over a registry filled through the Python API."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from mreg.engine import Engine
from mreg.errors import EngineError
from mreg.records import BuiltImage, GitInfo, ModelFile, Record, open_record_store
from mreg.registry import Registry
from mreg.storage import open_object_store
from mreg.ui.app import create_app
from mreg.ui.export import export_site

HOSTILE = "<script>alert(1)</script>"
NAME = "iris-rf"
PACKAGES = [
    {"shared": ["numpy==1.26.4", "scikit-learn==1.3.2"], "train": ["pandas==2.1.4"], "serve": ["fastapi==0.109.0"]},
    {"shared": ["numpy==1.26.4", "scikit-learn==1.4.0"], "train": ["pandas==2.1.4"], "serve": ["fastapi==0.109.0"]},
    {"shared": ["numpy==1.26.4", "scikit-learn==1.4.0"], "train": [], "serve": ["fastapi==0.110.0", HOSTILE]},
]


def no_engine() -> Engine:
    raise EngineError("Cannot connect to the Docker daemon at unix:///var/run/docker.sock.")


def image(stage: str, version: int) -> BuiltImage:
    digest = "sha256:" + f"{version}{'a' if stage == 'train' else 'b'}" * 32
    return BuiltImage.pushed(f"registry.example.com/ml/iris-rf:{stage}-{version}", digest)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """Three versions of iris-rf (the last with hostile values), a moved `production` alias, a deleted one."""
    root = tmp_path_factory.mktemp("ui")
    registry = Registry(open_record_store("file://registry", root), objects=open_object_store("file://objects", root))
    started = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    for number, packages in enumerate(PACKAGES, start=1):
        model_path = root / f"model-{number}.joblib"
        model_path.write_bytes(b"model %d" % number * 100)
        stored = registry.store_model(model_path)
        hostile = number == len(PACKAGES)
        model = stored.model_copy(update={"filename": f"{HOSTILE}.joblib"}) if hostile else stored
        git = GitInfo(commit=HOSTILE, dirty=True) if hostile else GitInfo(commit="f" * 40, dirty=False)

        def make(
            version: int, model: ModelFile = model, packages: dict[str, list[str]] = packages, git: GitInfo = git
        ) -> Record:
            return Record(
                name=NAME,
                version=version,
                model=model,
                images={"train": image("train", version), "serve": image("serve", version)},
                packages=packages,  # type: ignore[arg-type]
                python="3.11.2",
                spec_sha256="c" * 64,
                created_at=started + timedelta(days=version),
                git=git,
            )

        registry.create(NAME, make)
    registry.alias(NAME, "production", 1)
    registry.alias(NAME, "production", 2)
    registry.alias(NAME, "staging", 3)
    registry.alias(NAME, "staging", None)
    return registry


@pytest.fixture(scope="module")
def client(registry: Registry) -> TestClient:
    return TestClient(create_app(registry, engine=no_engine), follow_redirects=False)


PAGES = [
    "/",
    f"/models/{NAME}/",
    f"/models/{NAME}/before/3/",
    *[f"/models/{NAME}/versions/{n}/" for n in (1, 2, 3)],
    f"/models/{NAME}/diff/1/3/",
    f"/models/{NAME}/diff/2/3/",
    f"/models/{NAME}/aliases/production/",
    f"/models/{NAME}/aliases/staging/",
    f"/models/{NAME}/versions/3/verify/",
]


def text_of(html: str) -> str:
    """What a reader sees: tags dropped, entities decoded, whitespace collapsed."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_safely(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "<script>alert" not in response.text
    sources = re.findall(r'(?:src|href|action)="([^"]*)"', response.text)
    assert sources
    assert not [source for source in sources if re.match(r"[a-z]+:|//", source)], "a page links outside the server"
    assert "@import" not in response.text
    assert "url(" not in client.get("/static/style.css").text


def test_hostile_values_show_as_text(client: TestClient) -> None:
    page = client.get(f"/models/{NAME}/versions/3/").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.joblib" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;</code>" in page  # the git commit and the package
    diff = client.get(f"/models/{NAME}/diff/2/3/").text
    assert "<td><code>&lt;script&gt;alert(1)&lt;/script&gt;</code></td><td></td><td></td><td>added</td>" in diff


def test_models_page_shows_latest_aliases_and_last_change(client: TestClient, registry: Registry) -> None:
    text = text_of(client.get("/").text)
    assert f"{NAME} 3 2026-11-04 09:00:00 UTC @production → 2" in text
    last_move = registry.alias_history(NAME, "staging").history[-1].at
    assert last_move.strftime("%Y-%m-%d %H:%M:%S") in text
    assert "@staging" not in text  # deleted


def test_versions_page_lists_newest_first_with_aliases_and_short_digests(client: TestClient) -> None:
    html = client.get(f"/models/{NAME}/").text
    rows = re.findall(r'<td><a href="versions/(\d+)/">', html)
    assert rows == ["3", "2", "1"]
    assert 'data-copy="sha256:' + "2b" * 32 + '"' in html
    assert ">sha256:2b2b2b2b2b2b</code>" in html
    assert '<a class="alias" href="aliases/production/">@production</a>' in html
    assert "staging</a> (deleted)" in html
    assert 'href="diff/2/3/">diff with 2</a>' in html


def test_versions_are_paged(registry: Registry, client: TestClient) -> None:
    from mreg.ui import pages

    older = pages.versions_page(registry, NAME, before=3)
    assert [record.version for record in older.context["records"]] == [2, 1]
    assert older.context["older"] is None
    assert "newest</a>" in client.get(f"/models/{NAME}/before/3/").text


def test_version_page_pins_images_and_says_how_to_get_it(client: TestClient, registry: Registry) -> None:
    text = text_of(client.get(f"/models/{NAME}/versions/2/").text)
    serve = "registry.example.com/ml/iris-rf@sha256:" + "2b" * 32
    assert f"docker pull {serve}" in text
    assert f"mreg --registry {registry.where} pull {NAME}:2" in text
    assert f'Registry.open("{registry.where}").get("{NAME}:2")' in text
    assert "serve image (4) fastapi==0.109.0 numpy==1.26.4 scikit-learn==1.4.0" not in text  # sorted, shared+own
    assert "serve image (3) fastapi==0.109.0 numpy==1.26.4 scikit-learn==1.4.0" in text
    assert "train image (3) numpy==1.26.4 pandas==2.1.4 scikit-learn==1.4.0" in text
    assert "previous version 1 · what changed" in text


def test_diff_shows_changed_added_and_removed_packages_per_image(client: TestClient) -> None:
    text = text_of(client.get(f"/models/{NAME}/diff/1/3/").text)
    assert "train image package 1 3 pandas 2.1.4 removed scikit-learn 1.3.2 1.4.0 changed" in text
    assert "fastapi 0.109.0 0.110.0 changed" in text
    assert "serve image" in text
    assert "python 3.11.2 3.11.2" in text
    same = text_of(client.get(f"/models/{NAME}/diff/3/3/").text)
    assert same.count("same packages") == 2


def test_compare_form_redirects_to_the_diff_and_refuses_bad_numbers(client: TestClient) -> None:
    response = client.get(f"/models/{NAME}/diff", params={"old": "1", "new": "2"})
    assert (response.status_code, response.headers["location"]) == (303, f"/models/{NAME}/diff/1/2/")
    refused = client.get(f"/models/{NAME}/diff", params={"old": "1", "new": "x"})
    assert refused.status_code == 400
    assert "compare needs two version numbers, got &#39;1&#39; and &#39;x&#39;." in refused.text


def test_alias_timeline_shows_every_move(client: TestClient, registry: Registry) -> None:
    html = client.get(f"/models/{NAME}/aliases/production/").text
    text = text_of(html)
    by = registry.alias_history(NAME, "production").history[0].by
    assert text.count(by) == 2
    assert re.search(
        r"now: iris-rf:2 .* UTC " + re.escape(by) + r" 1 2 what changed .* UTC " + re.escape(by) + " - 1", text
    )
    staging = text_of(client.get(f"/models/{NAME}/aliases/staging/").text)
    assert "now: deleted" in staging
    assert " 3 deleted " in staging


def test_verify_without_an_engine_shows_the_failed_check(client: TestClient) -> None:
    response = client.get(f"/models/{NAME}/versions/1/verify/")
    assert response.status_code == 200
    text = text_of(response.text)
    assert "verification failed" in text
    assert "record ok" in text
    assert "model ok" in text
    assert "serve FAIL Cannot connect to the Docker daemon at unix:///var/run/docker.sock." in text


def test_unknown_things_are_404_and_bad_names_400(client: TestClient) -> None:
    missing = client.get(f"/models/{NAME}/versions/9/")
    assert missing.status_code == 404
    assert "model iris-rf has no version 9" in missing.text
    assert client.get("/models/nope/").status_code == 404
    assert client.get(f"/models/{NAME}/aliases/canary/").status_code == 404
    assert client.get("/models/NOT..VALID/").status_code == 400
    assert client.get("/elsewhere").status_code == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
@pytest.mark.parametrize("path", [*PAGES, "/static/style.css", "/nowhere"])
def test_every_other_method_is_405(client: TestClient, registry: Registry, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert registry.alias_history(NAME, "production").version == 2


def test_no_credential_reaches_a_page(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch, client: TestClient
) -> None:
    secret = "AKIA-not-a-real-secret-1234"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("MREG_INDEX_URL", f"https://user:{secret}@pypi.example.com/simple")
    for path in PAGES:
        assert secret not in client.get(path).text


def test_static_export_holds_the_same_pages_with_relative_links(tmp_path: Path, registry: Registry) -> None:
    count = export_site(registry, tmp_path / "site")
    site = tmp_path / "site"
    assert count == 1 + 1 + 3 + 2 + 2  # models, versions, 3 versions, 2 consecutive diffs, 2 aliases
    version = (site / "models" / NAME / "versions" / "2" / "index.html").read_text()
    assert 'href="../../../../static/style.css"' in version
    assert 'href="../../diff/1/2/index.html"' in version
    assert "verify now" not in version
    assert (site / "static" / "copy.js").is_file()
    for page in site.rglob("*.html"):
        html = page.read_text()
        assert "<script>alert" not in html
        for link in re.findall(r'(?:src|href)="([^"]*)"', html):
            assert (page.parent / link).resolve().is_file(), f"{page} links to {link}, which was not exported"
