"""``python -m xaiutils.experiments [name ...]``: run and store the experiments (all by default)."""
import sys

from . import EXPERIMENTS, run_and_store

for name in sys.argv[1:] or EXPERIMENTS:
    run_and_store(name)
