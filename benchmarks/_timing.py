"""What every benchmark here shares: a median timer and a one-line description of the machine."""
import os
import platform
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


def machine() -> str:
    """The processor, cores, library versions, threads and current load, for the results' header."""
    return (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s), Python {sys.version.split()[0]}, "
            f"load average {os.getloadavg()[0]:.1f} at the end of the run")
