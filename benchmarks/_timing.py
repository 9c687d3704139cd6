"""What every benchmark here shares: median timers and a one-line description of the machine."""
import os
import platform
import random
import statistics
import sys
import time

import torch


def median_time(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(fns: dict, rounds: int, seed: int = 0) -> dict:
    """Median wall time of each of ``fns`` (name -> callable) over ``rounds`` rounds, after one warm-up call of
    each. Every round calls each function once, in a shuffled order, so that a slow spell of a shared machine
    falls on all of them alike and the ratios between them stay fair."""
    for fn in fns.values():
        fn()
    order, times = list(fns), {name: [] for name in fns}
    shuffle = random.Random(seed).shuffle
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def machine() -> str:
    """The processor, cores, library versions, threads and current load, for the results' header."""
    return (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s), Python {sys.version.split()[0]}, "
            f"load average {os.getloadavg()[0]:.1f} at the end of the run")
