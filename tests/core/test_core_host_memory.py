"""yolocore.training.host_memory: with glibc, memory freed by one training step serves the next without page faults."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Page faults of the second of two identical 64 MB allocations, each written once and freed, in a fresh process.
PROBE = """
import resource, sys
import numpy as np
from yolocore.training.host_memory import retain_freed_memory
retained = retain_freed_memory() if sys.argv[1] == "retain" else False
def faults_of_one_allocation():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.ones(16 * 2**20, dtype=np.float32)
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_one_allocation()
print(retained, faults_of_one_allocation())
"""


def second_allocation_faults(policy):
    out = subprocess.run([sys.executable, "-c", PROBE, policy], cwd=ROOT, capture_output=True, text=True, check=True)
    retained, faults = out.stdout.split()
    return retained == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the policy is glibc's (Linux)")
def test_freed_memory_is_reused_without_page_faults():
    retained, faults_kept = second_allocation_faults("retain")
    if not retained:
        pytest.skip("this C library has no mallopt (not glibc): the policy leaves it as it is")
    _, faults_default = second_allocation_faults("default")
    # By default glibc unmaps the block and the next one faults in again: 16,384 pages, or 32 huge pages with
    # transparent huge pages. Kept, it is reused as it is.
    assert faults_default > 0, "the probe should see glibc's default return the block to the kernel"
    assert faults_kept <= faults_default // 4, "the freed block should have been reused, not faulted in again"
