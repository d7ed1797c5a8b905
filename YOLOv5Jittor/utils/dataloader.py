"""Batches of the shared YoloDataset for Jittor: the order and augmentation come from yolocore, seeded.

Jittor's own Dataset turns every batch into Vars inside its workers and counts len() in batches; this loader
keeps the PyTorch tree's contract instead (numpy images and targets, len() in batches of the sampler's order),
so both trees see exactly the same batches."""
import collections
import os

from yolocore.dataset import YoloDataset, epoch_order
from yolocore.workers import hidden_main_script, worker_context


class EpochSampler:
    """yolocore.dataset.epoch_order as a sampler, so both frameworks see the same batches; in a run of
    world_size processes, this process's share of that order."""

    def __init__(self, n, seed, shuffle, rank=0, world_size=1):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        return iter(epoch_order(self.n, self.seed, self.epoch, self.shuffle, self.rank, self.world_size).tolist())

    def __len__(self):
        return -(-self.n // self.world_size)


def collate(batch):
    return YoloDataset.collate_fn(batch)


_worker_dataset = None  # a worker's copy of the dataset, received when the worker starts


def _start_worker(dataset):
    global _worker_dataset
    _worker_dataset = dataset


def _load_batch(indices):
    return collate([_worker_dataset[i] for i in indices])


class DataLoader:
    """Worker processes (started each epoch with a copy of the dataset, so they see set_epoch) load the batches in
    order, at most two per worker ahead of the consumer."""

    def __init__(self, dataset, batch_size, sampler, num_workers):
        self.dataset, self.batch_size, self.sampler, self.num_workers = dataset, batch_size, sampler, num_workers

    def __len__(self):
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self):
        order = list(self.sampler)
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.num_workers == 0:
            yield from (collate([self.dataset[i] for i in b]) for b in batches)
            return
        with hidden_main_script():
            pool = worker_context([__name__]).Pool(self.num_workers, initializer=_start_worker,
                                                   initargs=(self.dataset,))
        in_flight = collections.deque()
        try:
            for batch in batches:
                in_flight.append(pool.apply_async(_load_batch, (batch,)))
                if len(in_flight) > 2 * self.num_workers:
                    yield in_flight.popleft().get()
            while in_flight:
                yield in_flight.popleft().get()
        finally:
            # When the loop stops early (an error in the training step, a break), let the few batches in flight
            # arrive instead of Pool.terminate(): a worker still sending a large batch holds the result queue's
            # lock, terminate() waits for that lock, and the process hung without showing the error.
            for result in in_flight:
                result.wait()
            pool.close()
            pool.join()


def create_dataloader(sources, imgsz, batch_size, nc, hyp=None, augment=False, shuffle=False, seed=0, workers=8,
                      prefix="", rank=0, world_size=1, cache_images=False, rect=False):
    """batch_size is this process's; with world_size > 1 it loads its share of the order (EpochSampler). rect:
    YOLOv5's rectangular validation batches, for one process reading in order."""
    dataset = YoloDataset(sources, imgsz=imgsz, augment=augment, hyp=hyp, nc=nc, seed=seed, cache_images=cache_images,
                          rect=rect, batch_size=batch_size, prefix=prefix)
    workers = min(max((os.cpu_count() or 1) // world_size, 1), batch_size, workers)
    sampler = EpochSampler(len(dataset), seed, shuffle, rank, world_size)
    loader = DataLoader(dataset, batch_size=min(batch_size, len(sampler)), sampler=sampler, num_workers=workers)
    return loader, dataset


def set_epoch(loader, epoch):
    loader.sampler.set_epoch(epoch)
    loader.dataset.set_epoch(epoch)
