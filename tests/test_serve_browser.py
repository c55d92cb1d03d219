"""The playground in a real browser: Debian's Chromium (``apt-get install chromium``; never a
downloaded browser) driven by Playwright opens ``/`` on a server in this process, takes the API
key, streams a chat reply, stops one (the server drops it from its batch), searches, runs
fill-mask and draws the catalogue. Screenshots of each step go to the test's folder (and to
``LMATLAS_SCREENSHOTS`` when set)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from lmatlas.serve import ServerConfig
from lmatlas.serve.background import running

from .helpers_serve import build_all
from .reference import require

CHROMIUM = "/usr/bin/chromium"
KEY = "browser-key"


@pytest.fixture(scope="module")
def page(tmp_path_factory, one_thread):
    sync_api = require("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (make setup-test does it)")
    folders = build_all(tmp_path_factory.mktemp("browser"))
    config = ServerConfig(model=str(folders["chat"]), api_key=KEY, index=str(folders["index"]), max_tokens=200,
                          task_models={"fill-mask": str(folders["mlm"])})
    with running(config) as served, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.set_default_timeout(30_000)
        page.served = served
        page.goto(served.url + "/")
        yield page
        browser.close()


def _shot(page, tmp_path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("LMATLAS_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


def test_chat_streams_and_stop_cancels_on_the_server(page, tmp_path, monkeypatch):
    engine = page.served.state.engine
    real = engine._forward

    def slow(tokens, threads):  # a step a human could watch (the tiny model is much faster)
        time.sleep(0.04)
        return real(tokens, threads)

    monkeypatch.setattr(engine, "_forward", slow)
    page.fill("#api-key", KEY)
    page.dispatch_event("#api-key", "change")
    page.wait_for_selector("#status.ok")
    page.fill("#system", "Be brief.")
    page.fill("#max-tokens", "24")
    # Count the reply's updates as they arrive: a streamed reply grows piece by piece.
    page.evaluate("""() => { window.updates = 0; new MutationObserver(() => window.updates++)
        .observe(document.getElementById('messages'), {childList: true, subtree: true, characterData: true}); }""")
    page.fill("#prompt", "Hello there")
    page.click("#send")
    page.wait_for_selector("#stop:disabled", state="attached")
    page.wait_for_function("document.querySelectorAll('.message.assistant').length == 1 && "
                           "!document.getElementById('send').disabled")
    reply = page.inner_text(".message.assistant")
    assert reply and page.evaluate("window.updates") > 5
    assert page.inner_text(".message.user") == "Hello there"
    _shot(page, tmp_path, "1-chat")

    drops = len(engine.drops)
    page.fill("#max-tokens", "150")
    page.fill("#prompt", "Tell me a long story")
    page.click("#send")
    page.wait_for_function("document.querySelectorAll('.message.assistant')[1]?.textContent.length > 10")
    page.click("#stop")
    page.wait_for_function("!document.getElementById('send').disabled")
    deadline = time.monotonic() + 10
    while len(engine.drops) == drops and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(engine.drops) > drops  # the server dropped the stopped reply from its batch
    stopped = page.inner_text(".message.assistant >> nth=1")
    time.sleep(0.3)
    assert page.inner_text(".message.assistant >> nth=1") == stopped
    _shot(page, tmp_path, "2-stopped")


def test_search_tasks_and_catalogue(page, tmp_path):
    page.click("nav button[data-tab=search]")
    page.fill("#query", "Which animal purrs?")
    page.click("#search-form button")
    page.wait_for_selector("#hits li .source")
    assert "cats.md:" in page.inner_text("#hits li >> nth=0")
    _shot(page, tmp_path, "3-search")

    page.click("nav button[data-tab=tasks]")
    page.wait_for_selector("#task option[value=fill-mask]", state="attached")
    page.select_option("#task", "fill-mask")
    page.click("#task-form button")
    page.wait_for_selector("#task-result table")
    assert page.locator("#task-result tr").count() == 6  # a header and transformers' top 5
    _shot(page, tmp_path, "4-fill-mask")

    page.click("nav button[data-tab=catalog]")
    page.wait_for_selector("#chart svg circle")
    assert page.locator("#chart svg circle").count() >= 10
    page.click("#catalog-table th:has-text('Parameters')")
    first = page.inner_text("#catalog-table tbody tr:first-child td:nth-child(5)")
    assert first.endswith("M")  # smallest first
    _shot(page, tmp_path, "5-catalogue")
