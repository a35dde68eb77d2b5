"""The search page in a real browser (Chromium driven by Playwright) against a real server
process started from another directory: search, upload, drop, more like this, the URL and the
back button, the API docs offline, and a clean stop on Ctrl-C."""

from __future__ import annotations

import base64
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from serve_fixtures import served_folders

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "serve.png"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium not installed at /usr/bin/chromium"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real `xmodal serve` process on a free port, started in an unrelated directory."""
    run, index = served_folders(tmp_path_factory)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "xmodal.cli", "serve", str(index), str(run), "--port", "0"]
    proc = subprocess.Popen(
        cmd, cwd=elsewhere, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    log: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            log.append(line)
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    url = None
    while url is None:
        try:
            line = lines.get(timeout=180)
        except queue.Empty:
            proc.kill()
            pytest.fail("the server did not start:\n" + "".join(log))
        if "ready at " in line:
            url = line.split("ready at ", 1)[1].strip()
    yield url, proc, log, index
    if proc.poll() is None:
        proc.kill()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    url = server[0]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(90_000)  # a loaded shared machine answers slowly, not wrongly
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(str(e)))

    def local_only(route):
        if route.request.url.startswith(url):
            route.continue_()
        else:
            problems.append(f"outside request: {route.request.url}")
            route.abort()

    page.route("**/*", local_only)
    page.goto(url)
    yield page
    context.close()
    assert problems == []


def _images_shown(page, at_least: int = 5) -> int:
    """Waits until at least `at_least` result thumbnails have loaded (decoded, not broken)."""
    page.wait_for_function(
        "n => [...document.querySelectorAll('#results img')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length >= n",
        arg=at_least,
    )
    return page.locator("#results img").count()


def test_search_more_like_this_and_back(page, server):
    url = server[0]
    page.fill("#q", "an animal")
    page.press("#q", "Enter")
    assert _images_shown(page) >= 5
    assert "q=an+animal" in page.url
    assert "for “an animal”" in page.inner_text("#status")
    first = page.locator("#results a").first
    liked = first.get_attribute("href")
    first.click()
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('like')")
    assert "like=" in page.url and page.url.endswith(liked)
    _images_shown(page)
    page.go_back()
    page.wait_for_function("() => location.search.includes('q=an+animal')")
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('“an')")
    assert page.input_value("#q") == "an animal"
    page.go_forward()
    page.wait_for_function("() => location.search.includes('like=')")
    # a shared link opens on its results
    page.goto(url + "?q=a+fruit&target=text")
    page.wait_for_selector("#results .match")
    assert page.is_checked("input[name=target][value=text]")


def test_keyboard_only(page):
    page.wait_for_function("() => document.activeElement.id === 'q'")  # focused on load
    page.keyboard.type("a bird")
    page.keyboard.press("Enter")
    _images_shown(page)
    page.focus("#results a")
    page.keyboard.press("Enter")
    page.wait_for_function("() => location.search.includes('like=')")
    assert page.locator("label[for=q]").count() == 1 and page.locator("label[for=upload]").count()


def test_upload_and_drop_an_image(page, server):
    index = server[3]
    from xmodal.retrieval.collection import Collection

    path = Path(str(Collection(index).items["image_paths"][0]))
    page.check("input[name=target][value=text]")
    page.set_input_files("#upload", str(path))
    page.wait_for_function(
        "name => document.querySelector('#status').textContent.includes('for image ' + name)",
        arg=path.name,
    )
    assert page.locator("#results .match").count() >= 5  # the captions found
    page.check("input[name=target][value=image]")
    data = base64.b64encode(path.read_bytes()).decode()
    page.evaluate(
        """b64 => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
            document.querySelector("#drop").dispatchEvent(
                new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""",
        data,
    )
    page.wait_for_function(
        "() => document.querySelector('#status').textContent.includes('for image dropped.png')"
    )
    _images_shown(page)
    assert page.locator("#results .score").first.inner_text().startswith("#1 · score 1.0000")


def test_screenshot_for_the_readme(page):
    page.fill("#q", "a musical instrument")
    page.press("#q", "Enter")
    _images_shown(page, 10)
    page.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 20_000


def test_api_docs_render_offline(page, server):
    page.goto(server[0] + "docs")
    page.wait_for_selector(".opblock", timeout=30_000)
    assert page.locator(".opblock").count() >= 6  # every endpoint, from local assets only


def test_ctrl_c_stops_the_server_cleanly(server):
    _, proc, log, _ = server
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    text = "".join(log)
    assert "Traceback" not in text and "Finished server process" in text
    requests = [line for line in text.splitlines() if '" 200' in line or '" 4' in line]
    assert requests and all(line.count("HTTP/1.1") == 1 for line in requests)
