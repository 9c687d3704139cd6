"""Every page of the built book in a real browser (headless Chromium, no network).

Checks that MathJax rendered every formula (no raw TeX left), every image loaded, no console
error appeared and nothing was requested from outside the machine. Screenshots of a few pages
go to _build/screenshots/. With ``XAI_BOOK_SCHEME=file`` the pages are opened from disk
(file://), as from the unzipped `make dist` archive, instead of from a local web server.
"""
import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "_build" / "screenshots"
# Chromium flags that keep a headless run off the network (see the machine notes).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-default-apps"]

PAGE_STATE = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const maths = Array.from(document.querySelectorAll('.math'));
  const unrendered = maths.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 60));
  const images = Array.from(document.images).filter(i => i.getAttribute('src'));
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  const text = document.querySelector('main') ? document.querySelector('main').innerText : document.body.innerText;
  const rawTex = /\\\\\\(|\\\\\\[|\\$\\$/.test(text);
  const views = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length;
  if (views > 0) {  // the widgets manager renders asynchronously: give it a few seconds
    for (let i = 0; i < 50 && document.querySelectorAll('.jupyter-widgets').length === 0; i++) {
      await new Promise(r => setTimeout(r, 100));
    }
  }
  const widgets = document.querySelectorAll('.jupyter-widgets').length;
  return {maths: maths.length, unrendered, images: images.length, broken, rawTex, views, widgets};
}"""


@pytest.fixture(scope="module")
def server(html_root, scheme):
    """The URL the pages are opened under: a local web server, or the folder itself (file://)."""
    if scheme == "file":
        yield html_root.as_uri()
        return

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(html_root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: `make test` installs Debian's chromium (apt-get install chromium).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


def visit(browser, url):
    """Open ``url``; return the page state, console errors and requests that left the machine.

    A file that is missing gives an HTTP 404 from the server, but only a failed request on file://.
    """
    errors, outside = [], []
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.on("console", lambda m: errors.append(f"{m.text} ({m.location.get('url', '')})") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    page.on("request", lambda r: outside.append(r.url)
            if not r.url.startswith(("http://127.0.0.1", "file://", "data:", "blob:", "about:")) else None)
    if url.startswith("file:"):
        page.on("requestfailed", lambda r: errors.append(f"failed: {r.url} ({r.failure})"))
    page.goto(url, wait_until="load", timeout=60_000)
    state = page.evaluate(PAGE_STATE)
    page.wait_for_timeout(200)
    return page, context, state, errors, outside


def test_every_page_renders_offline(browser, server, html_root, pages, scheme):
    # from disk (the unzipped archive), the screenshots go next to the copy that was checked
    shots_dir = html_root.parent / "screenshots" if scheme == "file" else SCREENSHOTS
    shots_dir.mkdir(parents=True, exist_ok=True)
    problems, formulas, images = [], 0, 0
    shots = {"intro.html", "notation.html", "01_running_examples.html"}
    for path in pages:
        if path.name == "index.html" and path.parent == html_root:
            continue  # only a redirect to the first page
        rel = path.relative_to(html_root).as_posix()
        page, context, state, errors, outside = visit(browser, f"{server}/{rel}")
        formulas += state["maths"]
        images += state["images"]
        if state["unrendered"] or state["rawTex"]:
            problems.append(f"{rel}: maths not rendered {state['unrendered'][:3]}")
        if state["views"] and not state["widgets"]:
            problems.append(f"{rel}: {state['views']} widget(s) not rendered")
        if state["broken"]:
            problems.append(f"{rel}: images not loaded {state['broken'][:3]}")
        if errors:
            problems.append(f"{rel}: console errors {errors[:3]}")
        if outside:
            problems.append(f"{rel}: requests left the machine {outside[:3]}")
        if path.name in shots:
            page.screenshot(path=str(shots_dir / f"{path.stem}.png"), full_page=False)
        context.close()
    assert formulas > 0 and images > 0, "the book has no formula or no image: this test would check nothing"
    assert not problems, "\n".join(problems)
