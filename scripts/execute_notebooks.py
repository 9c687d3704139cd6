"""Execute notebooks in place, storing their outputs and widget state (`make notebooks`).

The book is built from these stored outputs and `make test` compares them with a fresh run
(nbval), so what readers see is what the tests verified.
"""
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=1800, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    nbformat.write(nb, path)
    print(f"{path}: executed in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    for name in sys.argv[1:]:
        execute(Path(name))
