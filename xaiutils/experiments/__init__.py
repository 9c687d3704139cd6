"""Experiments too heavy for a chapter, run once by ``make experiments`` and stored as data.

Each experiment is a module of this package with

* ``SETTINGS``: ``{"full": {...}, "reduced": {...}}``, the sizes of the stored run and of a small
  run that the tests repeat;
* ``TOLERANCE``: ``{"atol": ..., "reason": ...}``, how far a repeated reduced run may move from the
  stored one on another machine (floating-point results of training differ between CPUs);
* ``run(setting, progress) -> DataFrame``: the experiment, seeded, one row per measurement.

``python -m xaiutils.experiments [name ...]`` runs the full and the reduced setting of each and
writes ``results/<name>.csv``, ``results/<name>-reduced.csv`` and ``results/<name>.json`` (the
settings, the wall time and the environment that produced them). A chapter loads the stored
table with :func:`load` and says that it did; ``tests/test_experiments.py`` re-runs the reduced
setting and compares it with the stored one, so a stored number cannot silently go stale when the
code changes. Nothing needs a GPU; on one, the full settings run faster.
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import time
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).parent / "results"
EXPERIMENTS = ("roar", "seeds", "attribution_robustness", "uncertainty")


def module(name: str):
    """The module that defines experiment ``name``."""
    if name not in EXPERIMENTS:
        raise ValueError(f"name must be one of {EXPERIMENTS}; got {name!r}.")
    return importlib.import_module(f"{__name__}.{name}")


def environment() -> dict:
    """What produced a result: versions, CPU, threads and device, for the stored JSON."""
    import torch

    from .. import versions

    return {"versions": versions(), "machine": platform.machine(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "date": time.strftime("%Y-%m-%d")}


def load(name: str, setting: str = "full") -> tuple[pd.DataFrame, dict]:
    """The stored results of experiment ``name`` and their record (settings, wall time, environment)."""
    if setting not in ("full", "reduced"):
        raise ValueError(f"setting must be 'full' or 'reduced'; got {setting!r}.")
    module(name)
    table = RESULTS / (f"{name}.csv" if setting == "full" else f"{name}-reduced.csv")
    record = RESULTS / f"{name}.json"
    if not table.exists() or not record.exists():
        raise FileNotFoundError(f"no stored results for {name!r} ({table.name}); run `make experiments`.")
    return pd.read_csv(table), json.loads(record.read_text())[setting]


def run_and_store(name: str, progress: bool = True) -> dict:
    """Run both settings of experiment ``name`` and store their tables and record."""
    experiment = module(name)
    RESULTS.mkdir(exist_ok=True)
    record = {}
    for setting in ("reduced", "full"):
        start = time.perf_counter()
        table = experiment.run(setting, progress=progress)
        seconds = time.perf_counter() - start
        table.to_csv(RESULTS / (f"{name}.csv" if setting == "full" else f"{name}-reduced.csv"), index=False)
        record[setting] = {"settings": {k: list(v) if isinstance(v, tuple) else v
                                        for k, v in experiment.SETTINGS[setting].items()},
                           "rows": len(table), "seconds": round(seconds, 1), "environment": environment()}
        print(f"{name} ({setting}): {len(table)} rows in {seconds:.0f} s")
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    return record
