"""Where data-loading worker processes come from, which batches they load, and how long they live, in both trees."""
import contextlib
import itertools
import multiprocessing
import os
import select
import shutil
import signal
import sys
import threading
import time
import traceback
import types
import warnings
from multiprocessing import shared_memory

import numpy as np

from yolocore.data.dataset import YoloDataset, epoch_order

LOST_WORKER_HINT = "killed for memory? fewer --workers or a smaller --batch-size need less"
BATCHES_AHEAD = 2  # per worker, loaded or loading before the consumer asks for them
SHARED_MEMORY_HINT = "fewer --workers or a larger /dev/shm (docker run --shm-size 2g) avoid it"


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
    every model module, in every worker (Jittor's import alone takes seconds and claims a kernel
    cache of its own). The workers need only the dataset's modules. The script is hidden while the workers start,
    which is when multiprocessing reads it."""
    script = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = script


def end_with(trainer_pid):
    """In a data-loading worker: end it (os._exit) as soon as the trainer process trainer_pid ends, however it
    ends. A trainer that exits, raises or is interrupted stops its workers itself, but one killed (kill -9, the
    kernel's out-of-memory killer) cannot, and a fork server's workers then live on for good: each holds the
    server's liveness pipe open, so the server waits for them, and they (torch's workers watch their parent) for
    the server. Once the workers have ended, the server and multiprocessing's resource tracker see their pipes
    close and end too, the tracker unlinking the shared memory the run left."""
    threading.Thread(target=_exit_when_ended, args=(trainer_pid,), name="end_with_trainer", daemon=True).start()


def _exit_when_ended(pid):
    try:
        ended = os.pidfd_open(pid)  # readable once the process has ended, zombie or reaped, whoever its parent
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):  # not Linux 5.3 or later: ask about the process every second
        with contextlib.suppress(ProcessLookupError, PermissionError):
            while True:
                os.kill(pid, 0)
                time.sleep(1)
        os._exit(1)
    select.select([ended], [], [])
    os._exit(1)


class EpochBatches:
    """The batches of yolocore.data.dataset.epoch_order, each a list of (epoch, index) keys of YoloDataset, so a worker
    knows each item's epoch whenever it started; in a run of world_size processes, this process's share of the
    order. Iterating gives the batches of epoch `epoch`, or with `endless`, of that epoch and all after it."""

    def __init__(self, n, batch_size, seed, shuffle, rank=0, world_size=1):
        self.n, self.seed, self.shuffle, self.rank, self.world_size = n, seed, shuffle, rank, world_size
        self.items = -(-n // world_size)
        self.batch_size = min(batch_size, self.items)
        self.epoch, self.endless = 0, False

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def order(self, epoch):
        return epoch_order(self.n, self.seed, epoch, self.shuffle, self.rank, self.world_size)

    def __len__(self):
        return -(-self.items // self.batch_size)

    def __iter__(self):
        epochs = itertools.count(self.epoch) if self.endless else (self.epoch,)
        for epoch in epochs:
            order = self.order(epoch).tolist()
            for start in range(0, len(order), self.batch_size):
                yield [(epoch, i) for i in order[start:start + self.batch_size]]


class EpochStream:
    """A loader's batches, one epoch per pass, from a stream that open_stream() starts (a generator over the loaded
    batches of `batches`, in order, that stops its workers when closed). Without persistent the stream serves one
    epoch and closes, as a plain loader's workers do. With it the stream runs on through the epochs, so its
    workers load the next epoch's first batches while the trainer validates, and the first step of an epoch need
    not wait for workers to start and fill up; ultralytics' InfiniteDataLoader keeps its workers for that reason.
    A pass left unfinished (a break, an error in the step) closes the stream, and a pass for another epoch than
    the stream's next starts a new one: the batches are those of a plain loader whatever happens. A finished pass
    moves `batches` on to the next epoch, so a loader read without set_epoch (validation) goes on in its stream."""

    def __init__(self, batches, open_stream, persistent):
        self.batches, self.open_stream, self.persistent = batches, open_stream, persistent
        self.stream, self.stream_epoch = None, None

    def __iter__(self):
        epoch = self.batches.epoch
        if self.stream is not None and self.stream_epoch != epoch:
            self.close()
        if self.stream is None:
            self.batches.endless = self.persistent
            self.stream, self.stream_epoch = self.open_stream(), epoch
        finished = False
        try:
            for _ in range(len(self.batches)):
                yield next(self.stream)
            finished = True
        finally:
            if finished and self.persistent:
                self.stream_epoch = epoch + 1
            else:
                self.close()
        self.batches.set_epoch(epoch + 1)

    def close(self):
        if self.stream is not None:
            self.stream.close()
            self.stream, self.stream_epoch = None, None


def _work(dataset, tasks, results, slot_names, trainer_pid):
    """A worker's life: load the batches whose keys arrive on tasks and send each back on results, or the error it
    raised, with this worker's traceback as a note. A batch's images go into the shared-memory slot that its task
    names, and only their shape through the pipe, where they fit the slot. Ctrl-C is the trainer's to handle (it
    stops the workers): a terminal sends SIGINT to every process of its group, and each worker would print a
    traceback of its own. It ends with trainer_pid (end_with)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    end_with(trainer_pid)
    slots = [shared_memory.SharedMemory(name) for name in slot_names]
    with contextlib.suppress(EOFError, BrokenPipeError):  # the trainer ended without stopping its workers
        while True:
            keys, slot = tasks.recv()
            try:
                imgs, *rest = YoloDataset.collate_fn([dataset[key] for key in keys])
            except Exception as e:
                e.add_note(f"raised in data-loading worker {os.getpid()}:\n{traceback.format_exc()}")
                results.send((None, e))
                continue
            if slots and imgs.nbytes <= slots[slot].size:
                np.ndarray(imgs.shape, np.uint8, slots[slot].buf)[...] = imgs
                imgs = imgs.shape
            results.send(((imgs, *rest), None))


def shared_slot_bytes(dataset, batch_size):
    """The size of a shared-memory slot that holds a batch's images."""
    height, width = dataset.largest_image()
    return batch_size * 3 * height * width


def reserved_slots(slot_bytes):
    """BATCHES_AHEAD blocks of shared memory of slot_bytes each, their pages taken from /dev/shm (Linux's shared
    memory, 64 MB in a Docker container) now: a worker that wrote into a page it has no room for would die of
    SIGBUS. None, and a warning, where it has no room: then the images travel through the pipes, slower."""
    slots = []
    try:
        for _ in range(BATCHES_AHEAD):
            slots.append(shared_memory.SharedMemory(create=True, size=slot_bytes))
            if os.path.isdir("/dev/shm"):  # Linux, where a block is a file there
                fd = os.open(f"/dev/shm/{slots[-1].name}", os.O_RDWR)
                try:
                    os.posix_fallocate(fd, 0, slot_bytes)
                finally:
                    os.close(fd)
    except OSError as e:
        free_shared_memory(slots)
        on_linux = os.path.isdir("/dev/shm")
        room = f"/dev/shm has {shutil.disk_usage('/dev/shm').free / 2**20:.0f} MB free" if on_linux else e.strerror
        warnings.warn(f"{room}, less than the {BATCHES_AHEAD * slot_bytes / 2**20:.0f} MB a data-loading worker's "
                      f"batches need: they travel through pipes instead, which costs the trainer time "
                      f"({SHARED_MEMORY_HINT})", stacklevel=2)
        return []
    return slots


def free_shared_memory(blocks):
    for block in blocks:
        block.close()
        block.unlink()


class Worker:
    """A data-loading process of its own, with a pipe for its tasks and one for its results, and BATCHES_AHEAD
    slots of shared memory for the images of the batches it holds (slot_bytes each), where there is room. The
    trainer copies a batch's images out of its slot in milliseconds; pickled through a pipe, a batch of 32 images
    of 512 px took 25-40 ms of its time. multiprocessing.Pool is not used: while a result is in its queue's pipe,
    the pool's worker-handler thread wakes without pause and takes the CPU and the interpreter lock from the thread
    that reads the result. Such a batch took 5-12 s to arrive through a Pool of fork-server workers."""

    def __init__(self, context, dataset, slot_bytes):
        self.slots = reserved_slots(slot_bytes)
        tasks, self.tasks = context.Pipe(duplex=False)
        self.results, results = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_work, args=(dataset, tasks, results, [s.name for s in self.slots], os.getpid()), daemon=True)
        try:
            self.process.start()
        except BaseException:
            self.free_slots()
            raise
        tasks.close()  # the worker's ends: once it has exited, reading its results ends instead of waiting
        results.close()
        self.sent = self.received = 0

    def send(self, keys):
        """At most BATCHES_AHEAD batches sent and not yet received: each has a slot of its own, in turn."""
        try:
            self.tasks.send((keys, self.sent % BATCHES_AHEAD))
        except OSError:  # it has ended
            self._lost()
        self.sent += 1

    def receive(self):
        try:
            batch, error = self.results.recv()
        except (EOFError, OSError):  # it ended before or while it sent the batch
            self._lost()
        slot = self.received % BATCHES_AHEAD
        self.received += 1
        if error is not None:
            raise error
        imgs, *rest = batch
        if isinstance(imgs, tuple):  # their shape: the images are in the slot, which the next batch sent reuses
            imgs = np.ndarray(imgs, np.uint8, self.slots[slot].buf).copy()
        return (imgs, *rest)

    def _lost(self):
        self.process.join()
        raise RuntimeError(f"data-loading worker {self.process.pid} ended with code {self.process.exitcode} "
                           f"({LOST_WORKER_HINT})") from None

    def stop(self):
        """At once, mid-batch if it is loading one: each worker has pipes of its own, so no lock is left held."""
        self.process.terminate()
        self.process.join()
        self.tasks.close()
        self.results.close()
        self.free_slots()

    def free_slots(self):
        free_shared_memory(self.slots)


def worker_stream(dataset, batches, num_workers):
    """The batches (YoloDataset.collate_fn of each list of keys that batches gives), in order, loaded by
    num_workers processes at most BATCHES_AHEAD per worker ahead of the consumer (by this process with none); a
    generator, whose close() stops its workers. The Jittor tree's loader: Jittor's own would turn batches into
    Vars."""
    if num_workers == 0:
        yield from (YoloDataset.collate_fn([dataset[key] for key in keys]) for keys in batches)
        return
    context, workers = worker_context([__name__]), []
    slot_bytes = shared_slot_bytes(dataset, batches.batch_size)
    try:
        with hidden_main_script():
            for _ in range(num_workers):  # one at a time, so that those started are stopped if one fails to start
                workers.append(Worker(context, dataset, slot_bytes))
        # Batch k goes to worker k % n: each worker's results come in order, and so do the batches.
        keys_of_batches = iter(batches)
        sent = received = 0
        for keys in itertools.islice(keys_of_batches, BATCHES_AHEAD * num_workers):
            workers[sent % num_workers].send(keys)
            sent += 1
        while received < sent:
            batch = workers[received % num_workers].receive()
            received += 1
            keys = next(keys_of_batches, None)
            if keys is not None:
                workers[sent % num_workers].send(keys)
                sent += 1
            yield batch
    finally:
        for worker in workers:
            worker.stop()
