"""budget_bert.pretraining.cpu_memory: with freed memory kept, a large tensor allocated again faults in no pages."""

import subprocess
import sys

import pytest


# Allocates and fills a 256 MB tensor six times, before and after keep_freed_memory(), and prints the fewest page
# faults of the last five (which reuse what the first left, if anything is kept).
PROBE = """
import resource, torch
from budget_bert.pretraining.cpu_memory import keep_freed_memory

def faults():
    counts = []
    for _ in range(6):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(64 * 2**20).sum()
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return min(counts[1:])

print(faults(), keep_freed_memory(), faults())
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc")
def test_kept_memory_is_reused_without_page_faults():
    printed = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    default_faults, applied, kept_faults = printed.split()
    assert applied == "True"
    # 256 MB is 65,536 pages of 4 KB: each allocation of a fresh mapping faults them in again (fewer with huge pages).
    assert int(default_faults) > 1000
    # Kept, the heap serves them again (now and then a small block lands at the start of the freed space and the
    # heap grows past it once: one allocation's faults, so not every reallocation is free).
    assert int(kept_faults) < int(default_faults) / 10, printed
