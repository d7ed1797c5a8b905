"""Batches of the shared YoloDataset for Jittor: the order and augmentation come from yolocore, seeded.

Jittor's own Dataset turns every batch into Vars inside its workers and counts len() in batches; this loader
keeps the PyTorch tree's contract instead (numpy images and targets, len() in batches of an epoch),
so both trees see exactly the same batches."""
import itertools
import os
import traceback

from yolocore.dataset import YoloDataset
from yolocore.workers import LOST_WORKER_HINT, EpochBatches, EpochStream, hidden_main_script, worker_context


def collate(batch):
    return YoloDataset.collate_fn(batch)


def _work(dataset, tasks, results):
    """A worker's life: load the batches whose keys arrive on tasks and send each back on results, or the error it
    raised, with this worker's traceback as a note."""
    for keys in iter(tasks.recv, None):
        try:
            batch = collate([dataset[key] for key in keys])
        except Exception as e:
            e.add_note(f"raised in data-loading worker {os.getpid()}:\n{traceback.format_exc()}")
            results.send((None, e))
        else:
            results.send((batch, None))


class Worker:
    """A data-loading process of its own, with a pipe for its tasks and one for its results. multiprocessing.Pool
    is not used: while a result is in its queue's pipe, the pool's worker-handler thread wakes without pause and
    takes the CPU and the interpreter lock from the thread that reads the result. A batch of 32 images of 512 px
    took 5-12 s to arrive through a Pool of fork-server workers, 0.05 s through a pipe of its own."""

    def __init__(self, context, dataset):
        tasks, self.tasks = context.Pipe(duplex=False)
        self.results, results = context.Pipe(duplex=False)
        self.process = context.Process(target=_work, args=(dataset, tasks, results), daemon=True)
        self.process.start()
        tasks.close()  # the worker's ends: once it has exited, reading its results ends instead of waiting
        results.close()

    def send(self, keys):
        self.tasks.send(keys)

    def receive(self):
        try:
            batch, error = self.results.recv()
        except (EOFError, OSError):  # it ended before or while it sent the batch
            self.process.join()
            raise RuntimeError(f"data-loading worker {self.process.pid} ended with code {self.process.exitcode} "
                               f"({LOST_WORKER_HINT})") from None
        if error is not None:
            raise error
        return batch

    def stop(self):
        """At once, mid-batch if it is loading one: each worker has pipes of its own, so no lock is left held."""
        self.process.terminate()
        self.process.join()
        self.tasks.close()
        self.results.close()


class DataLoader:
    """Worker processes, each started with a copy of the dataset, load the batches of EpochBatches in order, at most
    two per worker ahead of the consumer; with persistent, they live from one epoch to the next (EpochStream)."""

    def __init__(self, dataset, batch_sampler, persistent, num_workers):
        self.dataset, self.batch_sampler, self.num_workers = dataset, batch_sampler, num_workers
        self.stream = EpochStream(batch_sampler, self._open_stream, persistent)

    def __len__(self):
        return len(self.batch_sampler)

    def _open_stream(self):
        if self.num_workers == 0:
            yield from (collate([self.dataset[key] for key in batch]) for batch in self.batch_sampler)
            return
        context, workers, n = worker_context([__name__]), [], self.num_workers
        try:
            with hidden_main_script():
                workers += [Worker(context, self.dataset) for _ in range(n)]
            # Batch k goes to worker k % n: each worker's results come in order, and so do the batches.
            batches = iter(self.batch_sampler)
            sent = received = 0
            for keys in itertools.islice(batches, 2 * n):
                workers[sent % n].send(keys)
                sent += 1
            while received < sent:
                batch = workers[received % n].receive()
                received += 1
                keys = next(batches, None)
                if keys is not None:
                    workers[sent % n].send(keys)
                    sent += 1
                yield batch
        finally:
            for worker in workers:
                worker.stop()

    def __iter__(self):
        return iter(self.stream)

    def close(self):
        self.stream.close()


def create_dataloader(sources, imgsz, batch_size, nc, hyp=None, augment=False, shuffle=False, seed=0, workers=8,
                      prefix="", rank=0, world_size=1, cache_images=False, rect=False, persistent=False):
    """batch_size is this process's; with world_size > 1 it loads its share of the order (EpochBatches). rect:
    YOLOv5's rectangular validation batches, for one process reading in order. persistent: the workers outlive
    an epoch (EpochStream), for a loader read every epoch; close() stops them."""
    dataset = YoloDataset(sources, imgsz=imgsz, augment=augment, hyp=hyp, nc=nc, seed=seed, cache_images=cache_images,
                          rect=rect, batch_size=batch_size, prefix=prefix)
    workers = min(max((os.cpu_count() or 1) // world_size, 1), batch_size, workers)
    loader = DataLoader(dataset, EpochBatches(len(dataset), batch_size, seed, shuffle, rank, world_size), persistent,
                        num_workers=workers)
    return loader, dataset


def set_epoch(loader, epoch):
    loader.batch_sampler.set_epoch(epoch)
