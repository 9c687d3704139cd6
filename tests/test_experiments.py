"""The stored heavy experiments (xaiutils.experiments) are complete, recorded, and not stale.

For every experiment: the full and the reduced tables are stored with the settings, wall time and
environment that produced them, and the reduced setting run again now agrees with the stored
reduced table within the experiment's declared tolerance. A change of the code that moves the
results fails here until `make experiments` stores new ones.
"""
import re

import numpy as np
import pandas as pd
import pytest

from xaiutils import experiments

KEYS = ["method", "target", "seed", "fraction"]  # an experiment may declare its own KEYS and VALUES


def columns(module):
    """The columns that identify a row and the numbers a re-run must reproduce."""
    return getattr(module, "KEYS", KEYS), getattr(module, "VALUES", ["accuracy"])


@pytest.mark.parametrize("name", experiments.EXPERIMENTS)
def test_stored_results_are_complete_and_recorded(name):
    module = experiments.module(name)
    assert len(module.TOLERANCE["reason"].split()) >= 4 and 0 < module.TOLERANCE["atol"] <= 0.1
    for setting in ("full", "reduced"):
        table, record = experiments.load(name, setting)
        keys, values = columns(module)
        assert len(table) == record["rows"] > 0 and table[values].notna().all().all()
        assert "accuracy" not in table or table["accuracy"].between(0, 1).all()
        assert "Executed with xaiutils" in record["environment"]["versions"] and record["seconds"] > 0
        options = module.SETTINGS[setting]
        assert record["settings"] == {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
        assert not table.duplicated(keys).any()


def test_roar_full_table_has_every_run():
    table, _ = experiments.load("roar")
    options = experiments.module("roar").SETTINGS["full"]
    runs = len(options["methods"]) * len(options["targets"]) * len(options["fractions"]) + len(options["fractions"]) + 1
    assert len(table) == runs * len(options["seeds"])
    assert set(table["seed"]) == set(options["seeds"]) and set(table["method"]) == {"random", *options["methods"]}


@pytest.mark.parametrize("name", experiments.EXPERIMENTS)
def test_a_reduced_run_now_reproduces_the_stored_one(name):
    module = experiments.module(name)
    stored, _ = experiments.load(name, "reduced")
    fresh = module.run("reduced", progress=False)
    keys, values = columns(module)
    both = stored.merge(fresh, on=keys, suffixes=("_stored", "_now"), validate="one_to_one")
    assert len(both) == len(stored) == len(fresh)
    gap = pd.concat([np.abs(both[f"{value}_stored"] - both[f"{value}_now"]) for value in values], axis=1).max(axis=1)
    assert (gap <= module.TOLERANCE["atol"]).all(), pd.concat([both, gap.rename("gap")], axis=1).to_string()


def test_bad_names_say_what_exists():
    with pytest.raises(ValueError, match=re.escape(f"name must be one of {experiments.EXPERIMENTS}; got 'roor'")):
        experiments.load("roor")
    with pytest.raises(ValueError, match="setting must be 'full' or 'reduced'; got 'big'"):
        experiments.load("roar", "big")
