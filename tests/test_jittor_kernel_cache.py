"""Jittor compiles each new kernel to one path in its cache without a lock between processes, so every running
process of the Jittor tree compiles into kernel folders of its own (tested with real processes)."""
import subprocess
import sys

from yolocore.config import ROOT

CLAIM = ("import sys; from YOLOv5Jittor.utils.framework import claim_kernel_cache; "
         "print(claim_kernel_cache(sys.argv[1]), flush=True); sys.stdin.read()")


def start(shared):
    """A process that claims a kernel cache in shared, reports it, and holds it until its stdin closes."""
    process = subprocess.Popen([sys.executable, "-c", CLAIM, str(shared)], cwd=ROOT, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    return process, process.stdout.readline().strip()


def stop(process):
    process.stdin.close()
    assert process.wait(timeout=60) == 0


def test_processes_side_by_side_compile_into_their_own_kernel_folders(tmp_path):
    shared = tmp_path / "cache"
    for folder in ("jit", "obj_files"):
        (shared / folder).mkdir(parents=True)
    (shared / "jit_utils_core.so").write_bytes(b"Jittor's core, compiled once and shared")
    first, first_cache = start(shared)
    second, second_cache = start(shared)
    try:
        assert first_cache == str(shared)
        slot = shared / "process_slot1"
        assert second_cache == str(slot)
        for folder in ("jit", "obj_files"):
            assert (slot / folder).is_dir() and not (slot / folder).is_symlink()
        assert (slot / "jit_utils_core.so").resolve() == shared / "jit_utils_core.so"
        stop(first)
        third, third_cache = start(shared)  # the first slot is free again; the second is still held
        assert third_cache == str(shared)
        stop(third)
    finally:
        for process in (first, second):
            if process.poll() is None:
                stop(process)
