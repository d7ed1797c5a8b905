"""torch DataLoader over the shared YoloDataset: the order and augmentation come from yolocore, seeded."""
import os

import torch
from torch.utils.data import DataLoader, Sampler

from yolocore.dataset import YoloDataset, epoch_order


class EpochSampler(Sampler):
    """yolocore.dataset.epoch_order as a sampler, so both frameworks see the same batches."""

    def __init__(self, n, seed, shuffle):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        return iter(epoch_order(self.n, self.seed, self.epoch, self.shuffle).tolist())

    def __len__(self):
        return self.n


def collate(batch):
    imgs, targets, files, shapes = YoloDataset.collate_fn(batch)
    return imgs, torch.from_numpy(targets), files, shapes


def create_dataloader(sources, imgsz, batch_size, nc, hyp=None, augment=False, shuffle=False, seed=0, workers=8,
                      prefix=""):
    dataset = YoloDataset(sources, imgsz=imgsz, augment=augment, hyp=hyp, nc=nc, seed=seed, prefix=prefix)
    workers = min(os.cpu_count() or 1, batch_size, workers)
    loader = DataLoader(
        dataset,
        batch_size=min(batch_size, len(dataset)),
        sampler=EpochSampler(len(dataset), seed, shuffle),
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        # Workers copy the dataset when they start: they must restart each epoch to see set_epoch.
        persistent_workers=False,
    )
    return loader, dataset


def set_epoch(loader, epoch):
    loader.sampler.set_epoch(epoch)
    loader.dataset.set_epoch(epoch)
