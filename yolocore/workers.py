"""Where data-loading worker processes come from, in both trees."""
import contextlib
import multiprocessing
import sys
import types


def worker_context(preload):
    """The multiprocessing context for data-loading workers: a fork server that has imported only the modules in
    preload, where the platform has one (Linux, macOS), else the default. Workers forked from the trainer itself
    start by sharing its whole heap; as the trainer goes on writing, each page it rewrites is copied, and the
    workers keep the old ones until they exit. A CPU training run grew by half that way (FGD on NWPU at imgsz 320,
    two workers: a peak of 4.8 GB instead of 3.2 in Jittor, 2.8 instead of 1.9 in PyTorch). The fork server is
    small and leaves its pages as they are, so its workers share them for good. There is one server per
    process, started by the first loader that uses it, with that loader's preload; a module it lacks, a worker
    imports itself. Start the workers inside hidden_main_script()."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context()
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    return context


@contextlib.contextmanager
def hidden_main_script():
    """Workers started inside this do not import the script being run. multiprocessing has each child of a fork
    server, as each spawned process, import the main script before it starts: for train.py, torch or jittor and
    every model module, in every worker at every epoch (Jittor's import alone takes seconds and claims a kernel
    cache of its own). The workers need only the dataset's modules. The script is hidden while the workers start,
    which is when multiprocessing reads it."""
    script = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = script
