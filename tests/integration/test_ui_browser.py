"""`mreg ui` in a real browser: Debian's Chromium driven by Playwright clicks through a registry filled by real
`mreg register`, `mreg alias`, `mreg tag` and `mreg describe` runs (a faked build result, no Docker), and
saves a screenshot of each page into docs/screenshots/."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Dialog, Page, expect, sync_playwright

from mreg.engine import Engine
from mreg.errors import EngineError
from mreg.registry import Registry
from tests.support import REPO, copy_example, free_port, mreg, save_build

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HOSTILE_FILE = "<img src=x onerror=alert(1)>.joblib"
HOSTILE_TAG = "<script>alert(document.title)</script>"
SCREENSHOTS = REPO / "docs" / "screenshots"


def no_engine() -> Engine:
    raise EngineError("Cannot connect to the Docker daemon at unix:///var/run/docker.sock.")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """iris-rf 1 (production, by alice), then 2 with another annotated-types, a hostile file name and a hostile
    tag (production moved by bob, staging set, tagged and described), then 3 (a candidate, worse), all through
    the real command line, with metrics, params, a dataset and a run URL."""
    project = copy_example(tmp_path_factory.mktemp("ui") / "project")
    save_build(project)
    (project / "model.joblib").write_bytes(b"first model" * 100)
    lineage = ["--param", "max_depth=8", "--dataset", "s3://data/iris.csv@sha256:" + "9f" * 32]
    run = ["--run-url", "https://ci.example.com/runs/7"]
    mreg("register", "model.joblib", "--metric", "accuracy=0.91", "--metric", "f1=0.88", *lineage, *run, cwd=project)
    mreg("alias", "iris-rf", "1", "production", cwd=project, env={"MREG_ACTOR": "alice@ci"})
    lock = project / "registry.lock"
    text = lock.read_text()
    assert 'name = "annotated-types"\nversion = "0.8.0"' in text
    lock.write_text(
        text.replace('name = "annotated-types"\nversion = "0.8.0"', 'name = "annotated-types"\nversion = "0.7.0"')
    )
    save_build(project)
    (project / HOSTILE_FILE).write_bytes(b"second model" * 100)
    mreg("register", HOSTILE_FILE, "--metric", "accuracy=0.95", "--metric", "f1=0.9", *lineage, cwd=project)
    bob = {"MREG_ACTOR": "bob@ci"}
    mreg("alias", "iris-rf", "2", "production", cwd=project, env=bob)
    mreg("alias", "iris-rf", "2", "staging", cwd=project, env=bob)
    mreg("tag", "iris-rf:2", "stage=production", "owner=ml-platform", f"note={HOSTILE_TAG}", cwd=project, env=bob)
    mreg("describe", "iris-rf:2", "retrained on the November data", cwd=project, env=bob)
    (project / "third.joblib").write_bytes(b"third model" * 100)
    mreg("register", "third.joblib", "--metric", "accuracy=0.89", cwd=project)
    mreg("tag", "iris-rf:3", "stage=candidate", cwd=project)
    return project


@pytest.fixture(scope="module")
def base_url(project: Path) -> Iterator[str]:
    """The UI over the project's registry, served by uvicorn on 127.0.0.1 in a thread."""
    from mreg.ui.app import create_app

    app = create_app(Registry.open("file://.mreg/registry", root=project), engine=no_engine)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise TimeoutError("uvicorn did not start within 10 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def page(base_url: str) -> Iterator[Page]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(5000)
        yield page
        browser.close()


def test_click_through_models_versions_version_diff_and_alias(page: Page, base_url: str) -> None:
    requests: list[str] = []
    dialogs: list[str] = []
    page.on("request", lambda request: requests.append(request.url))

    def refuse(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", refuse)

    page.goto(base_url + "/")
    row = page.locator("tbody tr", has_text="iris-rf")
    expect(row.locator("td").nth(1)).to_have_text("3")
    production = row.locator(".standing", has_text="@production")
    expect(production).to_contain_text(re.compile(r"@production → 2 since \d{4}-\d\d-\d\d .* UTC by bob@ci"))
    expect(production).to_contain_text("(from 1 · what changed)")
    expect(row).to_contain_text("@staging → 2")
    shoot(page, "models")

    page.get_by_role("link", name="iris-rf", exact=True).click()
    expect(page.locator("h1")).to_have_text("iris-rf: versions")
    rows = page.locator("table.versions tbody tr")
    expect(rows).to_have_count(3)
    newest, second = rows.nth(0), rows.nth(1)
    expect(newest.locator("td").nth(3)).to_have_text("accuracy=0.89")
    expect(second).to_contain_text("@production @staging")
    expect(second.locator("td.metrics")).to_have_text("accuracy=0.95 f1=0.9")
    expect(second.locator(".tag-value", has_text="alert")).to_have_text(HOSTILE_TAG)
    charts = page.locator("figure.chart")
    expect(charts.locator("figcaption")).to_have_text(["accuracy", re.compile(r"^f1 \(2 of 3 versions have it\)")])
    expect(charts.first.locator("circle")).to_have_count(3)
    expect(charts.first.locator("polyline")).to_have_count(1)
    shoot(page, "versions")

    page.get_by_label("filter").fill("metrics.accuracy >= 0.9")
    page.get_by_role("button", name="apply").click()
    expect(page).to_have_url(re.compile(r"\?filter=metrics\.accuracy\+%3E%3D\+0\.9"))
    expect(rows.locator("td:first-child a")).to_have_text(["2", "1"])
    page.get_by_label("filter").fill("tags.stage = 'production'")
    page.get_by_label("order by").fill("metrics.f1 desc")
    page.get_by_role("button", name="apply").click()
    expect(rows).to_have_count(1)
    expect(rows.first.locator("td:first-child a")).to_have_text("2")
    expect(page.locator("p.summary")).to_have_text(
        "1 version where tags.stage = 'production', ordered by metrics.f1 desc"
    )
    shoot(page, "versions-filtered")
    page.get_by_label("filter").fill("tags.note = <b>")
    page.get_by_role("button", name="apply").click()
    expect(page.locator(".filter-error")).to_have_text("filter: column 13: expected a value after '=', found '<'.")
    expect(page.locator("b")).to_have_count(0)
    page.get_by_role("link", name="clear").click()
    expect(rows).to_have_count(3)

    second.get_by_role("link", name="2", exact=True).click()
    expect(page.locator("h1")).to_have_text("iris-rf:2")
    expect(page.locator(".filename")).to_have_text(HOSTILE_FILE)
    expect(page.locator("img")).to_have_count(0)
    expect(page.locator("p.description")).to_have_text("retrained on the November data")
    expect(page.locator("dd.tags .tag")).to_have_text([f"note={HOSTILE_TAG}", "owner=ml-platform", "stage=production"])
    expect(page.locator("table.metrics tbody tr")).to_have_text(["accuracy0.95", "f10.9"])
    expect(page.locator("dl.lineage")).to_contain_text("s3://data/iris.csv")
    expect(page.locator("ul.commands")).to_contain_text("pull iris-rf:2")
    shoot(page, "version")

    page.locator("dl.lineage").get_by_role("link", name="what changed").click()
    expect(page.locator("h1")).to_have_text("iris-rf: 1 → 2")
    serve = page.locator("section.stage", has_text="serve image")
    expect(serve.locator("tr.changed td")).to_have_text(["annotated-types", "0.8.0", "0.7.0", "changed"])
    expect(page.locator("section.stage", has_text="train image")).to_contain_text("same packages")
    metrics = page.locator("table.metrics-diff tbody tr")
    expect(metrics).to_have_text(["accuracy0.910.95+0.04", "f10.880.9+0.02"])
    shoot(page, "diff")

    page.get_by_role("link", name="iris-rf", exact=True).click()
    page.locator("ul.aliases").get_by_role("link", name="@production").click()
    expect(page.locator("h1")).to_have_text("iris-rf@production")
    expect(page.locator("p.current")).to_contain_text("@production → 2 since")
    moves = page.locator("table.timeline tbody tr")
    expect(moves).to_have_count(2)
    expect(moves.nth(0).locator("td").nth(1)).to_have_text("bob@ci")
    expect(moves.nth(0).locator("td")).to_contain_text(["bob@ci", "1", "2", "what changed"])
    expect(moves.nth(1).locator("td")).to_contain_text(["alice@ci", "-", "1"])
    shoot(page, "alias")
    moves.nth(0).get_by_role("link", name="what changed").click()
    expect(page.locator("h1")).to_have_text("iris-rf: 1 → 2")

    page.goto(base_url + "/models/iris-rf/versions/2/verify/")
    expect(page.locator("tr.failed")).to_have_count(2)  # both images: no engine to ask
    expect(page.locator("tr.failed").first).to_contain_text("Cannot connect to the Docker daemon")
    shoot(page, "verify")

    assert dialogs == []
    assert requests
    assert [url for url in requests if not url.startswith(base_url + "/")] == []


def shoot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
