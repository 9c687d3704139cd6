"""Point every notebook's Colab link and install cell at the repository named in _config.yml.

`_config.yml` (`repository.url`, `repository.branch`) is the only place that names the
repository. Each chapter repeats it twice, for readers in Colab:

* the "Running this notebook" link,
  ``https://colab.research.google.com/github/<owner>/<repo>/blob/<branch>/notebooks/<file>``;
* the install cell (tagged ``skip-execution`` and ``nbval-skip``), a comment line and
  ``%pip install -q "xaiutils[book] @ git+<url>@<branch>"``, then any other ``%pip`` line of the chapter's own
  (kept as it is).

`make sync-colab` rewrites both in every notebook from `_config.yml` (a fork runs it after editing
the file); `--check` changes nothing, lists the notebooks that are out of sync and exits with 1
(the unit tests run it). Running it twice changes nothing the second time.

    python scripts/sync_colab.py [--check] [NOTEBOOK ...]
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
INSTALL_COMMENT = ("# Colab only: install xaiutils (with its data, trained weights and the reference libraries it is "
                   "checked against).")
INSTALL_TAGS = {"skip-execution", "nbval-skip"}
# Any Colab link to a notebook of a GitHub repository, whatever its owner, repository or branch.
COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/[^\s()<>\"']+?\.ipynb")
GITHUB = re.compile(r"^https://github\.com/(?P<owner>[^/\s]+)/(?P<repo>[^/\s]+?)(?:\.git)?/?$")


@dataclass(frozen=True)
class Repository:
    """Where the book lives: `repository` of _config.yml."""

    url: str
    branch: str
    path_to_book: str = ""

    @classmethod
    def from_config(cls, config: Path) -> "Repository":
        section = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("repository") or {}
        url, branch = str(section.get("url") or "").rstrip("/"), str(section.get("branch") or "")
        if not GITHUB.match(url) or not branch:
            raise SystemExit(f"{config}: `repository.url` must be https://github.com/<owner>/<repo> and "
                             f"`repository.branch` a branch name (found url={url!r}, branch={branch!r}).")
        return cls(url, branch, str(section.get("path_to_book") or "").strip("/"))

    def install_cell(self) -> str:
        return f'{INSTALL_COMMENT}\n%pip install -q "xaiutils[book] @ git+{self.url}@{self.branch}"'

    def colab_link(self, notebook: Path, book_root: Path) -> str:
        m = GITHUB.match(self.url)
        path = notebook.resolve().relative_to(book_root.resolve()).as_posix()
        if self.path_to_book:
            path = f"{self.path_to_book}/{path}"
        return f"https://colab.research.google.com/github/{m['owner']}/{m['repo']}/blob/{self.branch}/{path}"


def is_install_cell(cell) -> bool:
    tags = set(cell.get("metadata", {}).get("tags", []))
    return cell.cell_type == "code" and INSTALL_TAGS <= tags and "pip install" in cell.source


def sync(nb, notebook: Path, repo: Repository, book_root: Path) -> list[str]:
    """Rewrite the Colab link(s) and the install cell of ``nb`` in place; return what is missing."""
    link = repo.colab_link(notebook, book_root)
    links = installs = 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source, n = COLAB_LINK.subn(link, cell.source)
            links += n
        elif is_install_cell(cell) and installs == 0:
            # the chapter's own extra install lines (lxt for chapter 15) stay after the xaiutils line
            extra = [line for line in cell.source.splitlines()
                     if line.strip().startswith(("%pip", "!pip")) and "xaiutils" not in line]
            cell.source = "\n".join([repo.install_cell(), *extra])
            installs += 1
    missing = []
    if not links:
        missing.append("no Colab link (https://colab.research.google.com/github/...) in a markdown cell")
    if not installs:
        missing.append("no install cell (a code cell tagged skip-execution and nbval-skip with `%pip install`)")
    return missing


def shown(path: Path, root: Path) -> str:
    """``path`` relative to the book's root where it lies inside it, for messages."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook is out of sync")
    parser.add_argument("--root", type=Path, default=ROOT, help="the book's root, where _config.yml lies")
    args = parser.parse_args(argv)
    repo = Repository.from_config(args.root / "_config.yml")
    notebooks = args.notebooks or sorted((args.root / "notebooks").glob("*.ipynb"))
    stale, broken = [], []
    for path in notebooks:
        raw = path.read_text(encoding="utf-8")
        nb = nbformat.reads(raw, as_version=4)
        missing = sync(nb, path, repo, args.root)
        broken += [f"{shown(path, args.root)}: {m}" for m in missing]
        text = nbformat.writes(nb) + "\n"
        if text != raw:
            stale.append(path)
            if not args.check:
                path.write_text(text, encoding="utf-8")
    for line in broken:
        print(line, file=sys.stderr)
    if args.check:
        for path in stale:
            print(f"{shown(path, args.root)}: Colab link or install cell does not match _config.yml", file=sys.stderr)
        if stale:
            print(f"{len(stale)} notebook(s) out of sync with `repository` in _config.yml: run `make sync-colab`.",
                  file=sys.stderr)
        return 1 if stale or broken else 0
    print(f"{len(stale)} of {len(notebooks)} notebook(s) rewritten for {repo.url}@{repo.branch}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
