"""torch DataLoader over the shared YoloDataset: the order and augmentation come from yolocore, seeded."""
import functools
import os
import warnings

import torch
from torch.utils.data import DataLoader, get_worker_info

from yolocore.data.dataset import YoloDataset
from yolocore.data.workers import (
    LOST_WORKER_HINT,
    SHARED_MEMORY_HINT,
    EpochBatches,
    EpochStream,
    end_with,
    hidden_main_script,
    worker_context,
)


class WorkerDataLoader(DataLoader):
    """DataLoader over EpochBatches, whose workers start from a small fork server (yolocore.data.workers); with
    persistent, they live from one epoch to the next (EpochStream)."""

    def __init__(self, dataset, batch_sampler, persistent, **kwargs):
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)
        self.stream = EpochStream(batch_sampler, self._open_stream, persistent)

    def _open_stream(self):
        with hidden_main_script():
            iterator = super().__iter__()
        try:
            yield from map(as_tensors, iterator)
        except (ConnectionError, EOFError) as e:
            # A worker ended after it queued a batch, whose tensors it shares by file descriptor: fetching them
            # from it fails (refused, reset, or closed mid-handshake) before torch's own check for ended workers
            # can say so.
            raise RuntimeError(f"a data-loading worker ended while handing over a batch ({LOST_WORKER_HINT})") from e
        finally:
            if self.num_workers:
                iterator._shutdown_workers()

    def __iter__(self):
        return iter(self.stream)

    def close(self):
        self.stream.close()


def collate(batch):
    """Tensors, not numpy arrays: a worker hands a tensor over in shared memory, while an array is pickled through
    a pipe (NWPU, imgsz 512, batch 32: 5 ms instead of 70 of the trainer's time a batch), and pin_memory pins
    tensors only. A worker moves them into shared memory itself, so that running out of it (/dev/shm, 64 MB in a
    Docker container) is an error here, and then sends numpy arrays through its pipe (see as_tensors): left to
    torch, the move fails in the worker's queue-feeding thread, the batch is lost, and the trainer waits for good."""
    imgs, targets, files, shapes = YoloDataset.collate_fn(batch)
    if get_worker_info() is None:
        return torch.from_numpy(imgs), torch.from_numpy(targets), files, shapes
    try:
        return torch.from_numpy(imgs).share_memory_(), torch.from_numpy(targets).share_memory_(), files, shapes
    except RuntimeError:  # "unable to allocate shared memory(shm) ...: No space left on device"
        return imgs, targets, files, shapes


def as_tensors(batch):
    """A batch that a worker sent as numpy arrays, for want of shared memory, as collate's tensors."""
    imgs, targets, files, shapes = batch
    if isinstance(imgs, torch.Tensor):
        return batch
    warnings.warn(f"shared memory (/dev/shm) is too small for the data-loading workers' batches: they travel "
                  f"through pipes instead, which costs the trainer time ({SHARED_MEMORY_HINT})", stacklevel=2)
    return torch.from_numpy(imgs), torch.from_numpy(targets), files, shapes


def _end_with(trainer_pid, worker_id):
    """torch's worker_init_fn: a killed trainer's workers end too (yolocore.data.workers.end_with)."""
    end_with(trainer_pid)


def create_dataloader(sources, imgsz, batch_size, nc, hyp=None, augment=False, shuffle=False, seed=0, workers=8,
                      prefix="", rank=0, world_size=1, cache_images=False, rect=False, persistent=False):
    """batch_size is this process's; with world_size > 1 it loads its share of the order (EpochBatches). rect:
    YOLOv5's rectangular validation batches, for one process reading in order. persistent: the workers outlive
    an epoch (EpochStream), for a loader read every epoch; close() stops them."""
    dataset = YoloDataset(sources, imgsz=imgsz, augment=augment, hyp=hyp, nc=nc, seed=seed, cache_images=cache_images,
                          rect=rect, batch_size=batch_size, prefix=prefix)
    workers = min(max((os.cpu_count() or 1) // world_size, 1), batch_size, workers)
    loader = WorkerDataLoader(
        dataset,
        EpochBatches(len(dataset), batch_size, seed, shuffle, rank, world_size),
        persistent,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        multiprocessing_context=worker_context([__name__]) if workers else None,
        worker_init_fn=functools.partial(_end_with, os.getpid()),
    )
    return loader, dataset


def set_epoch(loader, epoch):
    loader.batch_sampler.set_epoch(epoch)
