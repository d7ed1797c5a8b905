"""Host-memory policy for training on a CPU."""
import ctypes
import ctypes.util

# mallopt parameter numbers from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def retain_freed_memory():
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    A training step allocates and frees the same activations every step. By default glibc serves large blocks
    (always those over 32 MB) with mmap and unmaps them when freed, and trims the top of its heap, so each step
    faults its memory back in page by page: with a yolov5s teacher and a yolov5n student (imgsz 320, batch 16)
    that was 120,000-160,000 page faults and 0.2-0.3 s of kernel time per KD step, 10-20% of its time. Kept,
    the blocks hold no more resident memory than the peak step needs anyway (PyTorch's CUDA caching allocator does
    the same on a GPU). Returns whether the policy took effect: False on other C libraries (musl, macOS), which are
    left as they are.
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
