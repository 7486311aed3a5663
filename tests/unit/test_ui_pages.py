"""The read-only UI's pages through Starlette's TestClient, over a registry filled through the Python API."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape
from starlette.testclient import TestClient

from mreg.engine import Engine
from mreg.errors import EngineError
from mreg.records import BuiltImage, Dataset, GitInfo, ModelFile, Record, open_record_store
from mreg.registry import Registry
from mreg.storage import open_object_store
from mreg.ui import pages
from mreg.ui.app import create_app
from mreg.ui.export import export_site

HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
NAME = "iris-rf"
SHARED_OLD = ["numpy==1.26.4", "scikit-learn==1.3.2"]
SHARED_NEW = ["numpy==1.26.4", "scikit-learn==1.4.0"]
VERSIONS: list[dict[str, Any]] = [
    {
        "packages": {"shared": SHARED_OLD, "train": ["pandas==2.1.4"], "serve": ["fastapi==0.109.0"]},
        "metrics": {"accuracy": 0.91, "f1": 0.88},
        "params": {"max_depth": "8"},
        "datasets": [Dataset(uri="s3://data/iris.csv", sha256="9f" * 32)],
        "run_url": "https://ci.example.com/runs/7",
    },
    {
        "packages": {"shared": SHARED_NEW, "train": ["pandas==2.1.4"], "serve": ["fastapi==0.109.0"]},
        "metrics": {"accuracy": 0.95, "f1": 0.90},
        "params": {"max_depth": "10"},
    },
    {  # hostile values wherever a record holds text
        "packages": {"shared": SHARED_NEW, "train": [], "serve": ["fastapi==0.110.0", HOSTILE]},
        "metrics": {"accuracy": 0.93},
        "params": {"note": HOSTILE},
        "datasets": [Dataset(uri=HOSTILE)],
        "run_url": "javascript:alert(1)",
    },
    {
        "packages": {"shared": SHARED_NEW, "train": [], "serve": ["fastapi==0.110.0"]},
        "metrics": {"accuracy": 0.97, "f1": 0.92},
    },
]
YANK_REASON = "trained on the test set <b>oops</b>"


def no_engine() -> Engine:
    raise EngineError("Cannot connect to the Docker daemon at unix:///var/run/docker.sock.")


def image(stage: str, version: int) -> BuiltImage:
    digest = "sha256:" + f"{version}{'a' if stage == 'train' else 'b'}" * 32
    return BuiltImage.pushed(f"registry.example.com/ml/iris-rf:{stage}-{version}", digest)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """Four versions of iris-rf (the third with hostile values, the fourth yanked), tags and descriptions,
    `production` moved 1 -> 2, `canary` 1 -> 3, `staging` set on 3 and deleted."""
    root = tmp_path_factory.mktemp("ui")
    registry = Registry(open_record_store("file://registry", root), objects=open_object_store("file://objects", root))
    started = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    for number, fields in enumerate(VERSIONS, start=1):
        model_path = root / f"model-{number}.joblib"
        model_path.write_bytes(b"model %d" % number * 100)
        stored = registry.store_model(model_path)
        hostile = number == 3
        model = stored.model_copy(update={"filename": f"{HOSTILE}.joblib"}) if hostile else stored
        git = GitInfo(commit=HOSTILE, dirty=True) if hostile else GitInfo(commit="f" * 40, dirty=False)

        def make(version: int, model: ModelFile = model, fields: dict[str, Any] = fields, git: GitInfo = git) -> Record:
            return Record(
                name=NAME,
                version=version,
                model=model,
                images={"train": image("train", version), "serve": image("serve", version)},
                python="3.11.2",
                spec_sha256="c" * 64,
                created_at=started + timedelta(days=version),
                git=git,
                **fields,
            )

        registry.create(NAME, make)
    registry.tag(f"{NAME}:2", set={"stage": "production", "owner": "ml-platform"})
    registry.tag(f"{NAME}:3", set={"note": HOSTILE})
    registry.describe(f"{NAME}:2", "retrained on the November data")
    registry.describe(f"{NAME}:3", HOSTILE)
    registry.alias(NAME, "production", 1)
    registry.alias(NAME, "canary", 1)
    registry.alias(NAME, "production", 2)
    registry.alias(NAME, "canary", 3)
    registry.alias(NAME, "staging", 3)
    registry.alias(NAME, "staging", None)
    registry.yank(f"{NAME}:4", YANK_REASON)
    return registry


@pytest.fixture(scope="module")
def client(registry: Registry) -> TestClient:
    return TestClient(create_app(registry, engine=no_engine), follow_redirects=False)


VERSIONS_URL = f"/models/{NAME}/"
PAGES = [
    "/",
    VERSIONS_URL,
    f"{VERSIONS_URL}?filter=metrics.accuracy+%3E%3D+0.93",
    f"{VERSIONS_URL}?filter=tags.note+like+%27%25script%25%27",
    f"{VERSIONS_URL}?order=metrics.f1+asc",
    f"{VERSIONS_URL}?order=metrics.accuracy&after=3",
    f"{VERSIONS_URL}?before=3",
    f"/models/{NAME}/before/3/",
    *[f"/models/{NAME}/versions/{n}/" for n in (1, 2, 3, 4)],
    f"/models/{NAME}/diff/1/3/",
    f"/models/{NAME}/diff/2/3/",
    *[f"/models/{NAME}/aliases/{alias}/" for alias in ("production", "canary", "staging")],
    f"/models/{NAME}/versions/3/verify/",
]


def text_of(html: str) -> str:
    """What a reader sees: inline tags dropped, other tags a space, entities decoded, whitespace collapsed."""
    inline = re.sub(r"</?(?:a|span|code|time)\b[^>]*>", "", html)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", inline)))


def listed(html: str) -> list[int]:
    """The version numbers of a versions page's table, top to bottom."""
    return [
        int(number)
        for number in re.findall(r'<tr(?: class="yanked")?>\n<td><a href="[./]*versions/(\d+)/(?:index.html)?">', html)
    ]


def versions(client: TestClient, **params: str) -> str:
    response = client.get(VERSIONS_URL, params=params)
    assert response.status_code == 200, response.text
    return response.text


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_safely(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "<script>alert" not in response.text
    assert "<b>oops" not in response.text
    sources = re.findall(r'(?:src|href|action)="([^"]*)"', response.text)
    assert sources
    assert not [source for source in sources if re.match(r"[a-z]+:|//", source)], "a page links outside the server"
    assert "@import" not in response.text
    assert " style=" not in response.text  # inline styles: refused by the CSP, so never written
    assert "url(" not in client.get("/static/style.css").text


def test_hostile_values_show_as_text(client: TestClient) -> None:
    page = client.get(f"/models/{NAME}/versions/3/").text
    assert f"{ESCAPED}.joblib" in page
    assert f"{ESCAPED}</code>" in page  # the git commit and the package
    assert f'<span class="tag-value">{ESCAPED}</span>' in page
    assert f'<p class="description">{ESCAPED}</p>' in page
    assert f"<td><code>{ESCAPED}</code></td>" in page  # the param
    assert f'<div class="dataset"><code>{ESCAPED}</code>' in page
    assert 'href="javascript' not in page
    assert '<code class="copyable">javascript:alert(1)</code>' in page  # the run URL: text to copy, never a link
    diff = client.get(f"/models/{NAME}/diff/2/3/").text
    assert f"<td><code>{ESCAPED}</code></td><td></td><td></td><td>added</td>" in diff
    table = versions(client)
    assert f'<span class="tag-value">{ESCAPED}</span>' in table
    assert 'title="trained on the test set &lt;b&gt;oops&lt;/b&gt;">yanked</span>' in table


def test_models_page_says_what_is_where_since_when_and_what_changed(client: TestClient, registry: Registry) -> None:
    html = client.get("/").text
    text = text_of(html)
    production = registry.alias_history(NAME, "production").history[-1]
    since = production.at.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f"{NAME} 3 2026-11-04 09:00:00 UTC" in text  # 4 is yanked: the latest usable is 3
    assert f"@production → 2 since {since} by {production.by} (from 1 · what changed)" in text
    assert 'href="models/iris-rf/diff/1/2/">what changed</a>' in html
    assert 'href="models/iris-rf/diff/1/3/">what changed</a>' in html  # canary: 1 -> 3
    assert "@staging" not in text  # deleted
    last_move = registry.alias_history(NAME, "staging").history[-1].at
    assert last_move.strftime("%Y-%m-%d %H:%M:%S") in text


def test_a_repeated_move_keeps_the_time_it_first_pointed_there(tmp_path: Path) -> None:
    registry = Registry(open_record_store("file://registry", tmp_path))
    for _ in range(2):
        registry.create(NAME, _plain_record)
    registry.alias(NAME, "production", 1)
    registry.alias(NAME, "production", 2)
    registry.alias(NAME, "production", 2)
    history = registry.alias_history(NAME, "production").history
    found = pages.standing(registry.alias_history(NAME, "production"))
    assert found is not None
    assert (found.version, found.previous, found.since) == (2, 1, history[1].at)


def _plain_record(version: int) -> Record:
    return Record(
        name=NAME,
        version=version,
        model=ModelFile(uri=f"file:///m/{version}", sha256="0" * 64, size=1, filename="m"),
        images={"train": image("train", version), "serve": image("serve", version)},
        packages={"shared": []},
        python="3.11.2",
        spec_sha256="c" * 64,
        created_at=datetime(2026, 11, 1, tzinfo=UTC),
        git=None,
    )


def test_versions_page_lists_every_version_with_yank_state_metrics_tags_and_short_digests(client: TestClient) -> None:
    html = versions(client)
    assert listed(html) == [4, 3, 2, 1]  # yanked versions are listed, marked
    assert re.search(r'<tr class="yanked">\n<td><a href="versions/4/">4</a> <span class="badge yanked"', html)
    text = text_of(html)
    assert "accuracy=0.95 f1=0.9" in text
    assert "owner=ml-platform stage=production" in text
    assert 'data-copy="sha256:' + "2b" * 32 + '"' in html
    assert ">sha256:2b2b2b2b2b2b</code>" in html
    assert '<a class="alias" href="aliases/production/">@production</a>' in html
    assert "staging</a> (deleted)" in html
    assert 'href="diff/2/3/">diff with 2</a>' in html
    assert 'name="filter" value=""' in html


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"filter": "metrics.accuracy >= 0.93"}, [4, 3, 2]),
        ({"filter": "tags.stage = 'production'"}, [2]),
        ({"filter": "yanked = false"}, [3, 2, 1]),
        ({"filter": "package.scikit-learn < '1.4'"}, [1]),
        ({"filter": "alias = 'canary'"}, [3]),
        ({"order": "metrics.accuracy asc"}, [1, 3, 2, 4]),
        ({"order": "metrics.f1 desc"}, [4, 2, 1, 3]),  # 3 has no f1: last
        ({"filter": "not yanked", "order": "metrics.accuracy"}, [2, 3, 1]),
    ],
)
def test_versions_filter_and_order(client: TestClient, params: dict[str, str], expected: list[int]) -> None:
    html = versions(client, **params)
    assert listed(html) == expected
    for key in ("filter", "order"):
        if key in params:
            assert f'name="{key}" value="{escape(params[key])}"' in html
    assert "clear</a>" in html


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"filter": "metrics.accuracy >>= 1"}, "filter: column 19: expected a value after '>', found '>='."),
        ({"filter": f"tags.note = '{HOSTILE}' and"}, "filter: column 44: expected a field"),
        ({"filter": f"{HOSTILE} = 1"}, "filter: column 1: expected a field"),
        ({"order": "alias desc"}, "order-by: column 1: cannot order by 'alias'"),
    ],
)
def test_a_bad_filter_shows_the_parsers_message_escaped(
    client: TestClient, params: dict[str, str], message: str
) -> None:
    response = client.get(VERSIONS_URL, params=params)
    assert response.status_code == 400
    assert "<script>alert" not in response.text
    error = re.search(r'<p class="error filter-error">(.*?)</p>', response.text)
    assert error is not None
    assert unescape(error.group(1)).startswith(message)
    assert listed(response.text) == []
    assert '<form class="query"' in response.text  # the form stays, to fix the filter


@pytest.mark.parametrize(
    "params", [{"before": "x"}, {"before": "0"}, {"after": "2"}, {"order": "version", "before": "2"}]
)
def test_bad_page_positions_are_refused(client: TestClient, params: dict[str, str]) -> None:
    assert client.get(VERSIONS_URL, params=params).status_code == 400


def test_versions_are_paged_newest_first_and_in_an_order(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pages, "PAGE_SIZE", 2)
    first = versions(client)
    assert listed(first) == [4, 3]
    assert 'rel="next" href="./?before=3">next page</a>' in first
    second = versions(client, before="3")
    assert listed(second) == [2, 1]
    assert "next page" not in second
    assert '<a href="./">first page</a>' in second
    assert listed(client.get(f"/models/{NAME}/before/3/").text) == [2, 1]

    ordered = versions(client, filter="metrics.accuracy > 0", order="metrics.accuracy desc")
    assert listed(ordered) == [4, 2]
    following = re.search(r'rel="next" href="\./\?([^"]+)">next page', ordered)
    assert following is not None
    query = unescape(following.group(1))
    assert query == "filter=metrics.accuracy+%3E+0&order=metrics.accuracy+desc&after=2"
    rest = client.get(f"{VERSIONS_URL}?{query}").text
    assert listed(rest) == [3, 1]
    assert "next page" not in rest


def test_the_versions_page_charts_the_metrics_of_the_versions_listed(client: TestClient) -> None:
    html = versions(client)
    charts = re.findall(r'<figure class="chart">.*?</figure>', html, re.DOTALL)
    assert [re.search(r"<figcaption>(\w+)", chart).group(1) for chart in charts] == ["accuracy", "f1"]  # type: ignore[union-attr]
    accuracy, f1 = charts
    assert accuracy.count("<circle") == 4
    assert accuracy.count("<polyline") == 1
    assert "iris-rf:4 accuracy = 0.97 (yanked)" in accuracy
    assert 'class="point yanked"' in accuracy
    assert "(3 of 4 versions have it)" in f1
    assert f1.count("<circle") == 3
    lines = re.findall(r'<polyline class="line" points="([^"]*)"', f1)
    assert [len(line.split()) for line in lines] == [2]  # 1-2; version 3 lacks it, so 4 stands alone
    assert '<a href="versions/2/"><circle' in f1
    ordered = versions(client, order="metrics.f1")
    assert re.findall(r"<figcaption>(\w+)", ordered) == ["f1", "accuracy"]  # the ordered metric first
    assert "<svg" not in versions(client, filter="metrics.accuracy > 1")
    single = versions(client, filter="version = 2")  # one version: its point and both labels in the middle
    assert '<circle class="point" cx="193.0" cy="59.0"' in single
    assert '<text class="label" x="54" y="63.0" text-anchor="end">0.95</text>' in single
    assert '<text class="label" x="193.0" y="124" text-anchor="middle">2</text>' in single


def test_version_page_shows_annotations_metrics_lineage_and_how_to_get_it(
    client: TestClient, registry: Registry
) -> None:
    text = text_of(client.get(f"/models/{NAME}/versions/2/").text)
    serve = "registry.example.com/ml/iris-rf@sha256:" + "2b" * 32
    assert f"docker pull {serve}" in text
    assert f"mreg --registry {registry.where} pull {NAME}:2" in text
    assert f'Registry.open("{registry.where}").get("{NAME}:2")' in text
    assert "retrained on the November data" in text
    assert "tags owner=ml-platform stage=production" in text
    assert "metric value accuracy 0.95 f1 0.9" in text
    assert "param value max_depth 10" in text
    assert "@production → 2 since" in text
    assert "serve image (3) fastapi==0.109.0 numpy==1.26.4 scikit-learn==1.4.0" in text
    assert "train image (3) numpy==1.26.4 pandas==2.1.4 scikit-learn==1.4.0" in text
    assert "previous version 1 · what changed" in text
    assert "description - retrained on the November data" in text  # the annotation history
    first = text_of(client.get(f"/models/{NAME}/versions/1/").text)
    assert "datasets s3://data/iris.csv sha256:9f9f9f9f9f9f copy" in first
    assert "training run https://ci.example.com/runs/7 copy" in first
    assert "yanked" not in first


def test_a_yanked_version_says_why_and_by_whom(client: TestClient, registry: Registry) -> None:
    yank = registry.annotations(f"{NAME}:4").yanked
    assert yank is not None
    text = text_of(client.get(f"/models/{NAME}/versions/4/").text)
    assert f"Yanked by {yank.by} at {yank.at.strftime('%Y-%m-%d %H:%M:%S UTC')}: {YANK_REASON}." in text


def test_diff_shows_packages_metrics_params_and_fields(client: TestClient) -> None:
    text = text_of(client.get(f"/models/{NAME}/diff/1/3/").text)
    assert "train image package 1 3 pandas 2.1.4 removed scikit-learn 1.3.2 1.4.0 changed" in text
    assert "fastapi 0.109.0 0.110.0 changed" in text
    assert "metric 1 3 change accuracy 0.91 0.93 +0.02 f1 0.88 " in text
    assert "param 1 3 max_depth 8 note <script>alert(1)</script>" in text
    assert "python 3.11.2 3.11.2" in text
    assert "run URL https://ci.example.com/runs/7 javascript:alert(1)" in text
    html = client.get(f"/models/{NAME}/diff/1/2/").text
    assert '<tr class="changed"><td><code>accuracy</code></td><td>0.91</td><td>0.95</td><td>+0.04</td></tr>' in html
    assert (
        '<tr class="removed"><td><code>f1</code></td><td>0.88</td><td></td><td></td></tr>'
        in client.get(f"/models/{NAME}/diff/1/3/").text
    )
    same = text_of(client.get(f"/models/{NAME}/diff/3/3/").text)
    assert same.count("same packages") == 2


def test_compare_form_redirects_to_the_diff_and_refuses_bad_numbers(client: TestClient) -> None:
    response = client.get(f"/models/{NAME}/diff", params={"old": "1", "new": "2"})
    assert (response.status_code, response.headers["location"]) == (303, f"/models/{NAME}/diff/1/2/")
    refused = client.get(f"/models/{NAME}/diff", params={"old": "1", "new": "x"})
    assert refused.status_code == 400
    assert "compare needs two version numbers, got &#39;1&#39; and &#39;x&#39;." in refused.text


def test_alias_timeline_shows_every_move_and_what_each_changed(client: TestClient, registry: Registry) -> None:
    html = client.get(f"/models/{NAME}/aliases/production/").text
    text = text_of(html)
    by = registry.alias_history(NAME, "production").history[0].by
    assert text.count(by) == 3  # now (since), and both moves
    assert re.search(
        r"now: @production → 2 since .* UTC by " + re.escape(by) + r" \(from 1 · what changed\) "
        r".* UTC " + re.escape(by) + r" 1 2 what changed .* UTC " + re.escape(by) + " - 1",
        text,
    )
    assert 'href="../../diff/1/2/">what changed</a>' in html
    canary = client.get(f"/models/{NAME}/aliases/canary/").text
    assert 'href="../../diff/1/3/">what changed</a>' in canary
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
    assert client.get(f"/models/{NAME}/aliases/nope/").status_code == 404
    assert client.get(VERSIONS_URL, params={"order": "version", "after": "9"}).status_code == 404
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


def test_static_export_holds_the_plain_listing_and_every_page_it_links_to(tmp_path: Path, registry: Registry) -> None:
    count = export_site(registry, tmp_path / "site")
    site = tmp_path / "site"
    # models, versions, 4 versions, diffs 1-2, 2-3, 3-4 and canary's 1-3, 3 aliases
    assert count == 1 + 1 + 4 + 4 + 3
    version = (site / "models" / NAME / "versions" / "2" / "index.html").read_text()
    assert 'href="../../../../static/style.css"' in version
    assert 'href="../../diff/1/2/index.html"' in version
    assert "verify now" not in version
    listing = (site / "models" / NAME / "index.html").read_text()
    assert "This static export lists every version" in text_of(listing)
    assert "<form" not in listing
    assert listing.count("<svg") == 2
    assert listed(listing) == [4, 3, 2, 1]
    assert (site / "static" / "copy.js").is_file()
    for page in site.rglob("*.html"):
        html = page.read_text()
        assert "<script>alert" not in html
        for link in re.findall(r'(?:src|href)="([^"]*)"', html):
            assert (page.parent / link).resolve().is_file(), f"{page} links to {link}, which was not exported"


def test_static_export_pages_through_the_versions(
    tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "PAGE_SIZE", 3)
    export_site(registry, tmp_path / "site")
    first = (tmp_path / "site" / "models" / NAME / "index.html").read_text()
    assert listed(first) == [4, 3, 2]
    assert 'rel="next" href="before/2/index.html"' in first
    older = (tmp_path / "site" / "models" / NAME / "before" / "2" / "index.html").read_text()
    assert listed(older) == [1]
    assert '<a href="../../index.html">first page</a>' in older
