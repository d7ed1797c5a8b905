"""Jittor-only: a JIT-kernel cache folder of its own for every running process of the Jittor tree, because Jittor
compiles each new kernel to one path in its cache with no lock between processes (PyTorch keeps no such cache, so
this module has no twin). utils/framework.py claims the folder when it is imported, before any kernel compiles.
Found by an mpirun training whose two ranks broke a compile and hung (README, distributed training); held by
tests/jittor/test_jittor_kernel_cache.py::test_processes_side_by_side_compile_into_their_own_kernel_folders and
::test_a_process_runs_the_kernels_another_one_compiled_without_compiling_them."""
import fcntl
import itertools
import os
from pathlib import Path

_CLAIMED_SLOT = []
_PER_SLOT = ("jit", "obj_files", "kernels_in_use.lock")  # a slot links every other entry of the cache


def claim_kernel_cache(shared):
    """Give this process JIT-kernel folders that no other running process compiles into, and return the cache
    path. Jittor compiles each new kernel to one path in its cache without a lock between processes: two MPI ranks
    meeting a new kernel at once broke a compile and hung the run, and two trainings side by side can meet one
    too. The first process takes Jittor's own cache; a process running beside others takes the first free slot
    folder inside it (kernels in its own jit/ and obj_files/, Jittor's core and headers linked). A slot is an
    flock, released when its process ends, however it ends. Every process starts with the kernels any folder
    has compiled (share_compiled_kernels): a kernel one process compiled is not compiled again by the next,
    whichever slot that one takes."""
    shared = Path(shared)
    for slot in itertools.count():
        own = shared / f"process_slot{slot}" if slot else shared
        own.mkdir(exist_ok=True)
        handle = open(own / "kernels_in_use.lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _CLAIMED_SLOT.append(handle)  # the open file holds the slot until the process ends
        break
    if slot:
        for folder in ("jit", "obj_files"):
            (own / folder).mkdir(exist_ok=True)
        for entry in shared.iterdir():
            link = own / entry.name
            if not (entry.name in _PER_SLOT or entry.name.startswith("process_slot") or os.path.lexists(link)):
                link.symlink_to(entry)
    folders = [shared, *sorted(shared.glob("process_slot*"))]
    share_compiled_kernels(own, [folder for folder in folders if folder != own])
    return str(own)


def share_compiled_kernels(own, folders):
    """Bring into own/jit each kernel that one of folders has compiled and own lacks: a hard link to its library
    and its cache key with the folder's path turned into own's. Jittor's key holds the compile command, which
    names the kernel's files by full path, so that is the key Jittor computes in own, and it loads the library
    instead of compiling it again. A kernel whose key is written while it is read is left out, and a key that does
    not match only costs a compile: the compiler's linker replaces a library file rather than writing into it, so
    a linked library never changes under a process that loaded it."""
    own_jit = own / "jit"
    have = {library.name for library in own_jit.glob("*.so")}
    for folder in folders:
        for key_file in (folder / "jit").glob("*.so.key"):
            library = key_file.with_suffix("")
            if library.name in have:
                continue
            staged = own_jit / (library.name + ".sharing")
            try:
                key = key_file.read_bytes()
                staged.unlink(missing_ok=True)
                os.link(library, staged)
                if key_file.read_bytes() != key:
                    staged.unlink()
                    continue
            except FileNotFoundError:  # a kernel being compiled, or a folder being cleaned
                continue
            except OSError:  # no hard links on this file system: each slot compiles its own kernels
                staged.unlink(missing_ok=True)
                return
            (own_jit / key_file.name).write_bytes(key.replace(f"{folder}/".encode(), f"{own}/".encode()))
            os.replace(staged, own_jit / library.name)
            have.add(library.name)
