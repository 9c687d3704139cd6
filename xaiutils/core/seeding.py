"""Seeded blocks that leave the caller's random state alone."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Inside the block, torch's global generators (the CPU's and every initialised GPU's) are seeded
    with ``seed``; on exit every one of them is back in the state it had before.

    ``torch.random.fork_rng(devices=[])`` followed by ``torch.manual_seed`` would restore only the
    CPU generator, while ``manual_seed`` also reseeds the GPUs: the caller's CUDA stream of random
    numbers would silently restart.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
