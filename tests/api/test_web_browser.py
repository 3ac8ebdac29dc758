"""The web page in a real browser (Debian's Chromium through Playwright) against a real
`facespeech serve`: a wrong key, a refused upload, an upload, a training run, its cancel and
the dataset's deletion."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from facespeech.localstack import new_api_key, start_serve, wait_ready
from tests.conftest import free_port
from tests.security.conftest import write_video

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The flags a sandboxed, offline machine needs (no background calls home, no GPU).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("web")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESPEECH_")}
    env |= {"FACESPEECH_DATA_DIR": str(tmp / "data"), "FACESPEECH_DEVICE": "cpu",
            "FACESPEECH_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    key = new_api_key(env, "browser")
    process = start_serve(env, port, tmp / "serve.log", worker=False)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, tmp / "serve.log")
        yield f"http://127.0.0.1:{port}", key
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, server: tuple[str, str]) -> Iterator[Any]:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server[0] + "/")
    yield page
    page.close()
    assert not errors, errors


def _use_key(page: Any, key: str) -> None:
    page.fill("#api-key", key)
    page.click("#key-form button")


def test_a_wrong_key_is_said_plainly(page: Any) -> None:
    _use_key(page, "fsk_not-a-key")
    page.wait_for_selector("#notice:has-text('unknown or revoked')")


def test_a_refused_upload_shows_the_servers_reason(
    page: Any, server: tuple[str, str], tmp_path: Path
) -> None:
    _use_key(page, server[1])
    fake = tmp_path / "talk.mp4"
    fake.write_text("this is not a video")
    page.set_input_files("#video-file", str(fake))
    page.click("#upload-form button")
    page.wait_for_selector("#notice:has-text('not a readable')")


def test_upload_then_train_then_cancel(page: Any, server: tuple[str, str], tmp_path: Path) -> None:
    _use_key(page, server[1])
    page.set_input_files("#video-file", str(write_video(tmp_path / "talk.mp4")))
    page.fill("#dataset-name", "anna <b>bold</b>")
    page.click("#upload-form button")
    page.wait_for_selector("#datasets tbody tr")
    # the name is shown as text, never interpreted as HTML
    assert page.inner_text("#datasets tbody").startswith("anna <b>bold</b>")
    assert page.locator("#datasets b").count() == 0

    page.select_option("#train-preset", "tiny")
    page.click("#train-form button")
    row = page.locator("#jobs tbody tr", has_text="train")
    row.locator("td.status-queued").wait_for()
    row.locator("button", has_text="Cancel").click()
    row.locator("td.status-canceled").wait_for()
    row.locator("button", has_text="Timeline").click()
    page.wait_for_selector("#events-list li:has-text('cancel')")

    page.on("dialog", lambda dialog: dialog.accept())
    page.locator("#datasets tbody tr button", has_text="Delete").click()
    page.wait_for_selector("#notice:has-text('deleted anna')")
    page.wait_for_selector("#datasets tbody tr", state="detached")
