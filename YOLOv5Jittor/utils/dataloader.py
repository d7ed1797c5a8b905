"""Batches of the shared YoloDataset for Jittor: the order and augmentation come from yolocore, seeded.

Jittor's own Dataset turns every batch into Vars inside its workers and counts len() in batches; this loader
keeps the PyTorch tree's contract instead (numpy images and targets, len() in batches of an epoch),
so both trees see exactly the same batches."""
import os

from yolocore.data.dataset import YoloDataset
from yolocore.data.workers import EpochBatches, EpochStream, worker_stream


class DataLoader:
    """Worker processes (yolocore.data.workers.worker_stream) load the batches of EpochBatches in order; with
    persistent, they live from one epoch to the next (EpochStream)."""

    def __init__(self, dataset, batch_sampler, persistent, num_workers):
        self.dataset, self.batch_sampler, self.num_workers = dataset, batch_sampler, num_workers
        self.stream = EpochStream(batch_sampler, self._open_stream, persistent)

    def __len__(self):
        return len(self.batch_sampler)

    def _open_stream(self):
        return worker_stream(self.dataset, self.batch_sampler, self.num_workers)

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
