"""Offline link check: every internal link and anchor of the built book resolves."""
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"])
        if tag == "a" and a.get("href") is not None:
            self.hrefs.append(a["href"])
        if tag in ("img", "script") and a.get("src"):
            self.hrefs.append(a["src"])
        if tag == "link" and a.get("href"):
            self.hrefs.append(a["href"])


def parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def broken_links(html_root: Path, pages: list[Path], from_disk: bool = False) -> list[str]:
    """Internal links whose file or anchor does not exist.

    With ``from_disk``, a link to a folder is broken too: a web server answers it with the folder's
    index.html, a browser reading files (the unzipped `make dist` archive) shows a file listing.
    """
    parsed, broken = {}, []
    for page in pages:
        for href in parse(page).hrefs:
            url = urlsplit(href)
            if url.scheme or url.netloc or href.startswith(("mailto:", "javascript:")):
                continue  # external links are not checked offline
            target = page if not url.path else (page.parent / unquote(url.path)).resolve()
            if target.is_dir():
                if from_disk:
                    broken.append(f"{page.relative_to(html_root)}: {href} (a folder: opens as a file listing from disk)")
                    continue
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(html_root)}: {href} (no such file)")
                continue
            if url.fragment and target.suffix == ".html":
                if target not in parsed:
                    parsed[target] = parse(target)
                if unquote(url.fragment) not in parsed[target].ids:
                    broken.append(f"{page.relative_to(html_root)}: {href} (no such anchor)")
    return broken


def test_checker_reports_missing_pages_and_anchors(tmp_path):
    (tmp_path / "a.html").write_text('<a href="b.html#here">ok</a><a href="b.html#gone">x</a><a href="c.html">y</a>'
                                     '<a href="https://example.org/">external</a><h1 id="top">t</h1><a href="#top">self</a>')
    (tmp_path / "b.html").write_text('<section id="here"></section>')
    broken = broken_links(tmp_path, [tmp_path / "a.html"])
    assert broken == ["a.html: b.html#gone (no such anchor)", "a.html: c.html (no such file)"]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "index.html").write_text("<p>folder page</p>")
    (tmp_path / "d.html").write_text('<a href="sub/">folder</a>')
    assert broken_links(tmp_path, [tmp_path / "d.html"]) == []
    assert broken_links(tmp_path, [tmp_path / "d.html"], from_disk=True) == [
        "d.html: sub/ (a folder: opens as a file listing from disk)"]


def test_internal_links_and_anchors_resolve(html_root, pages):
    # the zip of `make dist` is read from disk, so the book never relies on a server's index.html
    broken = broken_links(html_root, pages, from_disk=True)
    assert not broken, "broken internal links:\n" + "\n".join(broken)
