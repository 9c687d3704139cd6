"""The built book is self-contained: no page loads a script or stylesheet from the network."""
import re
from html.parser import HTMLParser

REMOTE = re.compile(r"^(https?:)?//", re.IGNORECASE)


class _Resources(HTMLParser):
    def __init__(self):
        super().__init__()
        self.loaded = []  # (tag, url) of everything the page loads by itself

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.loaded.append((tag, a["src"]))
        if tag == "link" and a.get("href") and set((a.get("rel") or "").split()) & {"stylesheet", "preload", "modulepreload"}:
            self.loaded.append((tag, a["href"]))
        if tag in ("img", "iframe") and a.get("src"):
            self.loaded.append((tag, a["src"]))


def remote_resources(html: str) -> list:
    parser = _Resources()
    parser.feed(html)
    found = [(tag, url) for tag, url in parser.loaded if REMOTE.match(url)]
    found += [("css @import", url) for url in re.findall(r"@import\s+url\(['\"]?(https?://[^)'\"]+)", html)]
    return found


def test_detector_finds_remote_scripts():
    page = ('<script src="https://cdn.example.org/x.js"></script><link rel="stylesheet" href="//fonts.example/a.css">'
            '<script src="_static/local.js"></script>')
    assert remote_resources(page) == [("script", "https://cdn.example.org/x.js"), ("link", "//fonts.example/a.css")]


def test_no_page_loads_from_the_network(pages):
    offenders = {str(p): remote_resources(p.read_text(encoding="utf-8")) for p in pages}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"pages loading remote scripts or stylesheets: {offenders}"


def test_vendored_assets_are_served_by_the_book(html_root, pages):
    static = html_root / "_static"
    for name in ("mathjax/tex-chtml.js", "require.min.js", "widgets-config.js", "embed-amd.js"):
        assert (static / name).is_file(), f"{name} is missing from _static: run `make vendor`."
    assert "fonts.googleapis.com" not in (static / "embed-amd.js").read_text(encoding="utf-8")
    with_math = [p for p in pages if 'class="math' in p.read_text(encoding="utf-8")]
    assert with_math, "no page has maths: the MathJax check would test nothing"
    for page in with_math:
        assert "mathjax/tex-chtml.js" in page.read_text(encoding="utf-8"), f"{page} does not load the vendored MathJax"
