"""`mreg ui` in a real browser: Debian's Chromium driven by Playwright clicks through a registry filled by real
`mreg register` and `mreg alias` runs (a faked build result, no Docker), and saves a screenshot of each page
into docs/screenshots/."""

from __future__ import annotations

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
SCREENSHOTS = REPO / "docs" / "screenshots"


def no_engine() -> Engine:
    raise EngineError("Cannot connect to the Docker daemon at unix:///var/run/docker.sock.")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """iris-rf 1 (production, by alice), then 2 with another annotated-types and a hostile file name
    (production moved by bob, staging set), all through the real command line."""
    project = copy_example(tmp_path_factory.mktemp("ui") / "project")
    save_build(project)
    (project / "model.joblib").write_bytes(b"first model" * 100)
    mreg("register", "model.joblib", cwd=project)
    mreg("alias", "iris-rf", "1", "production", cwd=project, env={"MREG_ACTOR": "alice@ci"})
    lock = project / "registry.lock"
    text = lock.read_text()
    assert 'name = "annotated-types"\nversion = "0.8.0"' in text
    lock.write_text(
        text.replace('name = "annotated-types"\nversion = "0.8.0"', 'name = "annotated-types"\nversion = "0.7.0"')
    )
    save_build(project)
    (project / HOSTILE_FILE).write_bytes(b"second model" * 100)
    mreg("register", HOSTILE_FILE, cwd=project)
    mreg("alias", "iris-rf", "2", "production", cwd=project, env={"MREG_ACTOR": "bob@ci"})
    mreg("alias", "iris-rf", "2", "staging", cwd=project, env={"MREG_ACTOR": "bob@ci"})
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
    expect(row).to_contain_text("@production → 2")
    expect(row).to_contain_text("@staging → 2")
    shoot(page, "models")

    page.get_by_role("link", name="iris-rf", exact=True).click()
    expect(page.locator("h1")).to_have_text("iris-rf: versions")
    expect(page.locator("table.versions tbody tr")).to_have_count(2)
    newest = page.locator("table.versions tbody tr").first
    expect(newest).to_contain_text("@production @staging")
    shoot(page, "versions")

    newest.get_by_role("link", name="2", exact=True).click()
    expect(page.locator("h1")).to_have_text("iris-rf:2")
    expect(page.locator(".filename")).to_have_text(HOSTILE_FILE)
    expect(page.locator("img")).to_have_count(0)
    expect(page.locator("ul.commands")).to_contain_text("pull iris-rf:2")
    shoot(page, "version")

    page.get_by_role("link", name="what changed").click()
    expect(page.locator("h1")).to_have_text("iris-rf: 1 → 2")
    serve = page.locator("section.stage", has_text="serve image")
    expect(serve.locator("tr.changed td")).to_have_text(["annotated-types", "0.8.0", "0.7.0", "changed"])
    expect(page.locator("section.stage", has_text="train image")).to_contain_text("same packages")
    shoot(page, "diff")

    page.get_by_role("link", name="iris-rf", exact=True).click()
    page.locator("p.aliases").get_by_role("link", name="@production").click()
    expect(page.locator("h1")).to_have_text("iris-rf@production")
    moves = page.locator("table.timeline tbody tr")
    expect(moves).to_have_count(2)
    expect(moves.nth(0).locator("td").nth(1)).to_have_text("bob@ci")
    expect(moves.nth(0).locator("td")).to_contain_text(["bob@ci", "1", "2", "what changed"])
    expect(moves.nth(1).locator("td")).to_contain_text(["alice@ci", "-", "1"])
    shoot(page, "alias")

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
