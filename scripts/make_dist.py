"""Pack the built website into one zip that opens from disk (`make dist`).

Writes ``_build/robust-explainability-<version>.zip`` with one folder,
``robust-explainability-<version>/``, holding the HTML book as `make book` built it and a short
README.txt. The book serves MathJax, require.js and the widgets manager itself and links pages by
file name, so after unzipping, ``index.html`` opens with a double click (file://), offline;
`make test-dist` checks that in headless Chromium. The zip is reproducible: sorted entries, fixed
timestamps.

    python scripts/make_dist.py [--html _build/html] [--out _build]
"""
from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "robust-explainability"
SKIP = {".buildinfo"}  # Sphinx's incremental-build bookkeeping, of no use to a reader
README = """Robust Explainability {version}: the book as a website that runs from disk.

Open index.html in a web browser (double click). Nothing is loaded from the network: the maths,
figures and interactive galleries work offline. The chapters as notebooks are in _sources/notebooks/.
"""


def version() -> str:
    """The version of xaiutils (and of the book), read without importing the package."""
    text = (ROOT / "xaiutils" / "__init__.py").read_text(encoding="utf-8")
    return re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.MULTILINE)[1]


def make_zip(html: Path, out: Path, ver: str) -> Path:
    if not (html / "index.html").is_file():
        raise SystemExit(f"{html}/index.html not found: build the book first (`make book`).")
    top = f"{NAME}-{ver}"
    target = out / f"{top}.zip"
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in html.rglob("*") if p.is_file() and p.name not in SKIP)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        readme = zipfile.ZipInfo(f"{top}/README.txt", date_time=(2020, 1, 1, 0, 0, 0))
        zf.writestr(readme, README.format(version=ver), zipfile.ZIP_DEFLATED)
        for path in files:
            info = zipfile.ZipInfo(f"{top}/{path.relative_to(html).as_posix()}", date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html", help="the built website")
    parser.add_argument("--out", type=Path, default=ROOT / "_build", help="folder of the zip")
    parser.add_argument("--print-name", action="store_true", help="only print the zip's folder name and exit")
    args = parser.parse_args(argv)
    ver = version()
    if args.print_name:
        print(f"{NAME}-{ver}")
        return 0
    target = make_zip(args.html, args.out, ver)
    print(f"{target}: {target.stat().st_size / 2**20:.1f} MiB; unzip it and open {NAME}-{ver}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
