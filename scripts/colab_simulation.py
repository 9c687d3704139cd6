"""Run the chapters as Colab would: a bare Colab environment, the install cell, then every cell.

`make test-colab` runs it. For each notebook it checks what a Colab reader does:

1. a virtual environment with only what Colab ships (``COLAB`` below: PyTorch, the scientific
   stack, ipywidgets and the notebook runner), created once in ``_build/colab-venv`` and reset
   to exactly that set before each install, so nothing from an earlier run helps;
2. the notebook's own install cell, read from the notebook (``%pip install ... "xaiutils[book] @
   git+<url>@<branch>"``), with the git URL replaced by a copy of this checkout's files (those
   git tracks or would track, as a clone has them);
3. every cell of the notebook with nbclient in that environment, from an empty working folder
   (Colab's ``/content`` holds no repository), outputs discarded. A cell error or the time limit
   fails the notebook; the report names the notebook and the cell.

Notebooks with the same install line share one install. Exit status 1 if any notebook failed.

    python scripts/colab_simulation.py [NOTEBOOK ...] [--timeout SECONDS] [--venv DIR] [--fresh]

Only the standard library is imported at the top: the same file runs the notebooks inside the
Colab environment (``--run-notebook``), where only Colab's packages exist.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What Colab ships and a chapter may use without installing (Colab's own versions of the unpinned
# ones are recent releases). The kernel and the runner are there too.
COLAB = ["torch==2.14.1", "torchvision==0.29.1", "numpy", "scipy", "matplotlib", "pandas", "scikit-learn",
         "scikit-image", "tqdm", "ipywidgets", "ipykernel", "nbclient", "nbformat"]
KERNEL = "colab-simulation"
INSTALL_TAGS = {"skip-execution", "nbval-skip"}
GIT_XAIUTILS = re.compile(r"^xaiutils(?P<extras>\[[^\]]*\])?\s*@\s*git\+\S+$")


def log(message: str) -> None:
    print(message, flush=True)


def pip(venv: Path, *args: str) -> None:
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args], check=True)


def installed(venv: Path) -> dict[str, str]:
    """``{name: version}`` of every distribution in ``venv``."""
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json",
                          "--disable-pip-version-check"], check=True, capture_output=True, text=True).stdout
    return {d["name"].lower().replace("_", "-"): d["version"] for d in json.loads(out)}


def colab_base(venv: Path, fresh: bool) -> dict[str, str]:
    """Create ``venv`` with Colab's packages (once); return the versions that make up the base."""
    stamp = venv / "colab-base.json"
    if not fresh and stamp.exists() and json.loads(stamp.read_text())["requested"] == COLAB:
        return json.loads(stamp.read_text())["installed"]
    log(f"== creating the Colab environment in {venv} (once; a few minutes)")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip(venv, "install", "-q", *COLAB)
    subprocess.run([str(venv / "bin" / "python"), "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL,
                    "--display-name", "Colab simulation"], check=True, capture_output=True)
    base = installed(venv)
    stamp.write_text(json.dumps({"requested": COLAB, "installed": base}, indent=1))
    return base


def reset(venv: Path, base: dict[str, str]) -> None:
    """Bring ``venv`` back to exactly the Colab base: remove what was added, restore changed versions."""
    now = installed(venv)
    added = sorted(set(now) - set(base))
    changed = sorted(f"{name}=={base[name]}" for name in base if now.get(name) != base[name])
    if added:
        pip(venv, "uninstall", "-q", "-y", *added)
    if changed:
        pip(venv, "install", "-q", "--no-deps", *changed)
    log(f"== reset to Colab's packages ({len(added)} removed, {len(changed)} restored)")


def install_lines(path: Path) -> list[str]:
    """The ``%pip install`` lines of the notebook's install cell, as the reader will run them: first the one
    that installs xaiutils, then any other (e.g. ``--no-deps lxt`` for chapter 15)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and INSTALL_TAGS <= set(cell.get("metadata", {}).get("tags", [])):
            lines = [line.strip() for line in source.splitlines() if line.strip().startswith(("%pip", "!pip"))]
            if lines:
                return lines
    raise SystemExit(f"{path}: no install cell (a code cell tagged skip-execution and nbval-skip with %pip install)")


def install_line(path: Path) -> str:
    """The ``%pip install`` line of the notebook's install cell that installs xaiutils."""
    return install_lines(path)[0]


def local_pip_args(line: str, checkout: Path) -> list[str]:
    """Arguments for ``pip`` from a ``%pip install`` line, the git URL of xaiutils replaced by ``checkout``."""
    words = shlex.split(line.lstrip("%!"))
    if words[:2] != ["pip", "install"]:
        raise SystemExit(f"not a pip install line: {line}")
    args, replaced = [], False
    for word in words[1:]:
        match = GIT_XAIUTILS.match(word)
        if match:
            word, replaced = f"{checkout}{match['extras'] or ''}", True
        args.append(word)
    if not replaced:
        raise SystemExit(f"the install line does not install xaiutils from git: {line}")
    return args


def checkout_copy(dest: Path) -> Path:
    """Copy the files a clone of this repository would have (tracked or not ignored) into ``dest``."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def run_notebook(path: Path, timeout: int) -> int:
    """Inside the Colab environment: execute ``path`` from an empty folder; report the failing cell."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="content-") as content:
        client = NotebookClient(nb, timeout=timeout, kernel_name=KERNEL, resources={"metadata": {"path": content}})
        try:
            client.execute()
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:
            index = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.get("outputs") is not None
                          and any(o.get("output_type") == "error" for o in c.outputs)), None)
            where = f"cell {index}" if index is not None else "a cell"
            if index is not None:
                where += ": " + nb.cells[index].source.strip().splitlines()[0][:100]
            print(f"FAILED in {where}\n{str(error)[-3000:]}", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per notebook (default 1200)")
    parser.add_argument("--venv", type=Path, default=ROOT / "_build" / "colab-venv")
    parser.add_argument("--fresh", action="store_true", help="recreate the Colab environment from scratch")
    parser.add_argument("--run-notebook", type=Path, help=argparse.SUPPRESS)  # used inside the environment
    args = parser.parse_args(argv)
    if args.run_notebook:
        return run_notebook(args.run_notebook, args.timeout)

    notebooks = [p.resolve() for p in args.notebooks] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    venv = args.venv.resolve()
    base = colab_base(venv, args.fresh)
    by_line: dict[str, list[Path]] = {}
    for path in notebooks:
        by_line.setdefault("\n".join(install_lines(path)), []).append(path)

    results = []
    with tempfile.TemporaryDirectory(prefix="xaiutils-checkout-") as tmp:
        checkout = checkout_copy(Path(tmp))
        for lines, paths in by_line.items():
            reset(venv, base)
            log(f"== install cell: {lines}")
            start = time.perf_counter()
            first, *others = lines.split("\n")
            pip(venv, *local_pip_args(first, checkout))
            for line in others:
                pip(venv, *shlex.split(line.lstrip("%!"))[1:])
            log(f"   installed in {time.perf_counter() - start:.0f} s")
            for path in paths:
                name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                log(f"== {name}")
                start = time.perf_counter()
                command = [str(venv / "bin" / "python"), str(Path(__file__).resolve()), "--run-notebook", str(path),
                           "--timeout", str(args.timeout)]
                try:
                    ok = subprocess.run(command, timeout=args.timeout + 60).returncode == 0
                    status = "ok" if ok else "FAILED"
                except subprocess.TimeoutExpired:
                    status = f"FAILED (over {args.timeout} s)"
                results.append((str(name), status, time.perf_counter() - start))
                log(f"   {status} in {results[-1][2]:.0f} s")

    log("\nColab simulation:")
    for name, status, seconds in results:
        log(f"  {name:45s} {status:12s} {seconds:6.0f} s")
    failed = [r for r in results if r[1] != "ok"]
    log(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
