"""torch DataLoader over the shared YoloDataset: the order and augmentation come from yolocore, seeded."""
import os

import torch
from torch.utils.data import DataLoader, Sampler

from yolocore.dataset import YoloDataset, epoch_order
from yolocore.workers import hidden_main_script, worker_context


class EpochSampler(Sampler):
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


class WorkerDataLoader(DataLoader):
    """DataLoader whose workers start from a small fork server (yolocore.workers) each epoch."""

    def __iter__(self):
        with hidden_main_script():
            return super().__iter__()


def collate(batch):
    imgs, targets, files, shapes = YoloDataset.collate_fn(batch)
    return imgs, torch.from_numpy(targets), files, shapes


def create_dataloader(sources, imgsz, batch_size, nc, hyp=None, augment=False, shuffle=False, seed=0, workers=8,
                      prefix="", rank=0, world_size=1, cache_images=False, rect=False):
    """batch_size is this process's; with world_size > 1 it loads its share of the order (EpochSampler). rect:
    YOLOv5's rectangular validation batches, for one process reading in order."""
    dataset = YoloDataset(sources, imgsz=imgsz, augment=augment, hyp=hyp, nc=nc, seed=seed, cache_images=cache_images,
                          rect=rect, batch_size=batch_size, prefix=prefix)
    workers = min(max((os.cpu_count() or 1) // world_size, 1), batch_size, workers)
    sampler = EpochSampler(len(dataset), seed, shuffle, rank, world_size)
    loader = WorkerDataLoader(
        dataset,
        batch_size=min(batch_size, len(sampler)),
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        # Workers copy the dataset when they start: they must restart each epoch to see set_epoch.
        persistent_workers=False,
        multiprocessing_context=worker_context([__name__]) if workers else None,
    )
    return loader, dataset


def set_epoch(loader, epoch):
    loader.sampler.set_epoch(epoch)
    loader.dataset.set_epoch(epoch)
