"""Jittor compiles each new kernel to one path in its cache without a lock between processes, so every running
process of the Jittor tree compiles into kernel folders of its own, starting with the kernels the others have
compiled (tested with real processes)."""
import os
import subprocess
import sys

# isort: off
import YOLOv5Jittor  # noqa: F401  (sets jittor's CPU build flags, which must be in place before jittor loads)
import jittor as jt
# isort: on
import pytest

from yolocore.config import ROOT
from YOLOv5Jittor.utils.kernel_cache import _PER_SLOT

pytestmark = pytest.mark.slow  # processes that compile Jittor kernels

CLAIM = ("import sys; from YOLOv5Jittor.utils.kernel_cache import claim_kernel_cache; "
         "print(claim_kernel_cache(sys.argv[1]), flush=True); sys.stdin.read()")
# Claims a kernel cache in argv[1], runs a few kernels there, reports their result and the cache.
RUN_KERNELS = ("import sys; from YOLOv5Jittor.utils.kernel_cache import claim_kernel_cache; import jittor as jt; "
               "jt.flags.cache_path = claim_kernel_cache(sys.argv[1]); "
               "x = jt.arange(12).float32().reshape(3, 4); print((x * 3 + 1).exp().sum(1).numpy().tolist()); "
               "print(jt.flags.cache_path, flush=True); sys.stdin.read()")


def start(shared, script=CLAIM, reports=1):
    """A process that claims a kernel cache in shared, reports, and holds the cache until its stdin closes."""
    process = subprocess.Popen([sys.executable, "-c", script, str(shared)], cwd=ROOT, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    return process, *(process.stdout.readline().strip() for _ in range(reports))


def stop(*processes):
    for process in processes:
        if process.poll() is None:
            process.stdin.close()
            assert process.wait(timeout=60) == 0


def empty_cache(tmp_path):
    shared = tmp_path / "cache"
    for folder in ("jit", "obj_files"):
        (shared / folder).mkdir(parents=True)
    return shared


def compiled(folder, name, text=b"a compiled kernel"):
    """A kernel as Jittor leaves it: its library, and its cache key naming its files by full path."""
    (folder / "jit" / name).write_bytes(text)
    (folder / "jit" / f"{name}.key").write_bytes(f"g++ {folder}/jit/{name}.cc -o {folder}/jit/{name}\n".encode())


def test_processes_side_by_side_compile_into_their_own_kernel_folders(tmp_path):
    shared = empty_cache(tmp_path)
    (shared / "jit_utils_core.so").write_bytes(b"Jittor's core, compiled once and shared")
    compiled(shared, "first.so")
    (shared / "jit" / "unfinished.so").write_bytes(b"a kernel being compiled: no key yet")
    first, first_cache = start(shared)
    second, second_cache = start(shared)
    try:
        assert first_cache == str(shared)
        slot = shared / "process_slot1"
        assert second_cache == str(slot)
        for folder in ("jit", "obj_files"):
            assert (slot / folder).is_dir() and not (slot / folder).is_symlink()
        assert (slot / "jit_utils_core.so").resolve() == shared / "jit_utils_core.so"
        assert os.path.samefile(slot / "jit" / "first.so", shared / "jit" / "first.so")
        assert (slot / "jit" / "first.so.key").read_text() == f"g++ {slot}/jit/first.so.cc -o {slot}/jit/first.so\n"
        assert not (slot / "jit" / "unfinished.so").exists()
        compiled(slot, "second.so")
        stop(first)
        third, third_cache = start(shared)  # the first slot is free again; the second is still held
        assert third_cache == str(shared)
        assert os.path.samefile(shared / "jit" / "second.so", slot / "jit" / "second.so")
        key = (shared / "jit" / "second.so.key").read_text()
        assert key == f"g++ {shared}/jit/second.so.cc -o {shared}/jit/second.so\n"
        stop(third)
    finally:
        stop(first, second)


def test_a_process_runs_the_kernels_another_one_compiled_without_compiling_them(tmp_path):
    shared = empty_cache(tmp_path)
    jittor_cache = jt.compiler.cache_path
    for entry in os.listdir(jittor_cache):  # Jittor's core and headers, as a slot links them
        if entry not in _PER_SLOT and not entry.startswith("process_slot"):
            (shared / entry).symlink_to(os.path.join(jittor_cache, entry))
    first, first_result, first_cache = start(shared, RUN_KERNELS, reports=2)
    try:
        kernels = sorted(name for name in os.listdir(shared / "jit") if name.endswith(".so"))
        assert first_cache == str(shared) and kernels
        second, second_result, second_cache = start(shared, RUN_KERNELS, reports=2)
        stop(second)
        slot = shared / "process_slot1"
        assert (second_cache, second_result) == (str(slot), first_result)
        assert sorted(name for name in os.listdir(slot / "jit") if name.endswith(".so")) == kernels
        for name in kernels:  # the very libraries the first process compiled: a compile would replace them
            assert os.path.samefile(slot / "jit" / name, shared / "jit" / name)
    finally:
        stop(first)
