"""The training loop, written once for both trees: setup, the epochs, end-of-epoch validation, logging and
checkpoints, patience, the final validation. What touches a framework it asks of the tree's train.py module
(yolocore.training.run.Backend): a tree calls train(opt, its own module)."""
import contextlib
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from yolocore.config import ROOT, increment_path, load_data_yaml, load_hyp, save_yaml
from yolocore.data.synthetic import make_synthetic_dataset
from yolocore.evaluation.metrics import fitness
from yolocore.plots.detection import plot_images, plot_labels, plot_results
from yolocore.training.host_memory import retain_freed_memory
from yolocore.training.recipe import (
    FGD_KEYS,
    LOSS_KEYS,
    accumulation,
    kd_weight_at,
    loss_gains,
    lr_lambda,
    patience_ran_out,
    per_process_batch,
    results_row,
    scaled_weight_decay,
    warmup,
    warmup_iterations,
)
from yolocore.training.record import add_epoch, describe_device, training_record
from yolocore.training.results import append_results, clear_results, truncate_results
from yolocore.training.run import Run, build_model, make_checkpoint, restore, resume_options
from yolocore.training.run_folder import RunFolder
from yolocore.training.tensorboard_log import TensorBoardLog


@contextlib.contextmanager
def main_process_first(rank, barrier):
    """Rank 0 runs the block first (writing the synthetic data, label caches), the others then read its files."""
    if rank != 0:
        barrier()
    yield
    if rank == 0:
        barrier()


def prepare_data(opt):
    """The --data yaml's contents; without --data, the built-in synthetic dataset (written on first use)."""
    if not opt.data:
        opt.data = str(make_synthetic_dataset(ROOT / "datasets" / "synthetic"))
    return load_data_yaml(opt.data)


def setup(opt, tree):
    """Everything a run needs: folders, data, model, teacher and FGD, optimizer, EMA, and the state of a resumed
    run. Under torchrun or mpirun every process builds it: its share of the data, the teacher, the parallel
    wrappers; rank 0 alone writes files and validates, and holds the run folder (RunFolder) before it writes
    anything: a second run asking for the same folder stops there."""
    ckpt = None
    if opt.resume:
        opt, ckpt = resume_options(opt, tree)
        save_dir = Path(opt.save_dir)
    else:
        save_dir = increment_path(Path(opt.project) / opt.name, opt.exist_ok)
        opt.save_dir = str(save_dir)
    rank, world_size, device = tree.init_distributed(opt.device)
    tree.barrier()  # every process has named the run folder before rank 0 creates it
    folder = RunFolder(save_dir) if rank == 0 else None
    try:
        run = build_run(opt, tree, ckpt, save_dir, rank, world_size, device)
    except BaseException:
        if folder is not None:
            folder.abandon()
        raise
    run.folder = folder
    return run


def build_run(opt, tree, ckpt, save_dir, rank, world_size, device):
    """setup's Run, once rank 0 holds the run folder."""
    batch_size = per_process_batch(opt.batch_size, world_size)
    hyp = ckpt["hyp"] if ckpt else load_hyp(opt.hyp, kd=opt.mode == "KD", verbose=rank == 0)
    with main_process_first(rank, tree.barrier):
        data = prepare_data(opt)
    names = data["names"]
    tree.init_seeds(opt.seed, opt.deterministic)
    retain_freed_memory()

    model = build_model(opt, data, device, ckpt, tree)
    if opt.sync_bn:
        model = tree.sync_batchnorm(model, device)
    amp = tree.mixed_precision(device, opt.noamp, opt.amp)
    teacher = tree.load_teacher(opt.teacher, names, device, amp) if opt.mode == "KD" else None
    fgd = tree.build_fgd(model, teacher, opt.kd_layers, hyp, opt.imgsz, device) if teacher is not None else None
    with main_process_first(rank, tree.barrier):
        train_loader, dataset = tree.create_dataloader(
            data["train"], opt.imgsz, batch_size, data["nc"], hyp, augment=True, shuffle=True, seed=opt.seed,
            workers=opt.workers, prefix="train: ", rank=rank, world_size=world_size, cache_images=bool(opt.cache),
            persistent=True)
        val_loader = tree.create_dataloader(
            data["val"], opt.imgsz, batch_size * 2, data["nc"], seed=opt.seed, workers=opt.workers, prefix="val: ",
            cache_images=bool(opt.cache), rect=True, persistent=True)[0] if rank == 0 else None
    # The run's files come last, once the data's labels and image size are checked: a failed start leaves no
    # folder behind (RunFolder.abandon).
    if rank == 0:
        (save_dir / "weights").mkdir(exist_ok=True)
        save_yaml(save_dir / "hyp.yaml", hyp)
        save_yaml(save_dir / "opt.yaml", vars(opt))
    if not ckpt:
        if rank == 0:
            clear_results(save_dir)
            plot_labels(np.concatenate(dataset.labels, 0), names, save_dir)
        if not opt.noautoanchor:
            tree.autoanchor(model, dataset, hyp, opt.imgsz, opt.seed)

    trained = [model] + ([fgd] if fgd is not None else [])
    # The FGD module's align convs and GcBlocks train too, their gradients averaged over processes like the
    # student's. Checkpoints take the unwrapped modules.
    run = Run(opt=opt, hyp=hyp, save_dir=save_dir, names=names, rank=rank, world_size=world_size, device=device,
              amp=amp, model=model, parallel_model=tree.parallel(model, device), ema=tree.ModelEMA(model),
              optimizer=tree.build_optimizer(trained, hyp, scaled_weight_decay(hyp, opt.batch_size)),
              scaler=tree.grad_scaler(device, amp),
              compute_loss=tree.ComputeLoss(model, loss_gains(hyp, model.model[-1].nl, data["nc"], opt.imgsz)),
              train_loader=train_loader, val_loader=val_loader, lf=lr_lambda(opt.epochs, hyp["lrf"], opt.cos_lr),
              training=training_record(ckpt, describe_device(device, world_size, amp)), teacher=teacher, fgd=fgd,
              parallel_fgd=tree.parallel(fgd, device) if fgd is not None else None,
              accumulate=accumulation(hyp, opt.batch_size),
              tensorboard=TensorBoardLog(save_dir) if rank == 0 else None)
    if ckpt:
        restore(run, ckpt, tree)
        if rank == 0:
            truncate_results(save_dir / "results.csv", ckpt["epoch"])
            print(f"Resuming {opt.resume} from epoch {run.start_epoch + 1}/{opt.epochs}")
    run.last_opt_step = run.start_epoch * len(train_loader) - 1
    return run


def train_one_epoch(run, epoch, tree):
    """One pass over the training data; returns the mean losses (detection, then FGD terms in KD mode)."""
    opt, hyp, optimizer, loader, main = run.opt, run.hyp, run.optimizer, run.train_loader, run.rank == 0
    run.parallel_model.train()
    if run.fgd is not None:
        run.parallel_fgd.train()
    loader.batch_sampler.set_epoch(epoch)
    nb = len(loader)
    nw = warmup_iterations(hyp, nb)
    kd_weight = kd_weight_at(hyp, epoch, opt.epochs)
    for group in optimizer.param_groups:
        group["lr"] = hyp["lr0"] * run.lf(epoch)
    mloss = np.zeros(len(LOSS_KEYS) + (len(FGD_KEYS) if run.fgd is not None else 0))
    if main:
        print(("\n" + "%11s" * 6) % ("Epoch", "box_loss", "obj_loss", "cls_loss", "Instances", "Size"))
    bar = tqdm(enumerate(loader), total=nb, bar_format="{l_bar}{bar:10}{r_bar}", disable=not main)
    for i, (imgs, targets, paths, _) in bar:
        ni = i + nb * epoch
        if ni <= nw:
            run.accumulate, values = warmup(ni, nw, hyp, hyp["lr0"] * run.lf(epoch), opt.batch_size)
            for group, (lr, momentum) in zip(optimizer.param_groups, values):
                group["lr"], group["momentum"] = lr, momentum
        loss, items = tree.train_step(run, imgs, targets, kd_weight)
        # The last batch always steps: no gradient crosses an epoch boundary, so --resume continues exactly.
        if ni - run.last_opt_step >= run.accumulate or i == nb - 1:
            tree.optimizer_step(run)
            run.last_opt_step = ni
        mloss = (mloss * i + items) / (i + 1)
        if not np.isfinite(loss):
            raise FloatingPointError(f"epoch {epoch} batch {i}: loss is {loss}; lower lr0 or check the labels")
        bar.set_description(("%11s" + "%11.4g" * 3 + "%11i" * 2)
                            % (f"{epoch + 1}/{opt.epochs}", *mloss[:3], len(targets), imgs.shape[-1]))
        if main and epoch == run.start_epoch and i < 3:
            plotted = run.save_dir / f"train_batch{i}.jpg"
            plot_images(np.asarray(imgs), np.asarray(targets), paths, plotted, run.names)
            run.tensorboard.image(f"train_batch{i}", plotted, epoch)
    return tree.all_reduce_mean(mloss).tolist()


def end_epoch(run, epoch, losses, started, tree):
    """On rank 0: validate (every --val-period epochs and after the last; only then with --noval), log the epoch and
    its time (since `started`), save the last and best checkpoints (every --val-period epochs and after the last).
    True, on every process, when patience runs out."""
    if run.rank != 0:
        return tree.broadcast_flag(False)
    opt, weights_dir = run.opt, run.save_dir / "weights"
    measured = epoch + 1 == opt.epochs or (not opt.noval and (epoch + 1) % opt.val_period == 0)
    if measured:
        metrics, _ = tree.validate.run(run.ema.ema, run.val_loader, run.names, run.device,
                                       compute_loss=run.compute_loss, amp=run.amp)
    else:
        metrics = (float("nan"),) * 7  # a gap in results.png, not a fake zero
    fit = float(fitness(np.array(metrics[:4])[None])[0])
    lrs = [g["lr"] for g in run.optimizer.param_groups]
    row = results_row(epoch, losses, metrics, lrs)
    append_results(run.save_dir / "results.csv", row)
    run.tensorboard.scalars(row, epoch)
    run.tensorboard.flush()  # an epoch's figures are on disk when it ends, for a TensorBoard watching the run
    add_epoch(run.training, time.time() - started)
    # Checkpoints are written every --val-period epochs too: a yolov5s checkpoint takes 0.1-0.6 s to write, as much
    # as a GPU epoch's training, and a run that dies loses at most the epochs since its last validation.
    checkpointed = epoch + 1 == opt.epochs or (epoch + 1) % opt.val_period == 0
    # With --noval the newest weights are the best guess, and patience has nothing to count; between the validations
    # of --val-period the best stays the last validated one. best_fitness starts below any fitness, so the first
    # validated epoch is best even at 0 (the last one, with --noval).
    if (opt.noval and checkpointed and not measured) or (measured and fit > run.best_fitness):
        run.best_fitness = fit if measured else run.best_fitness
        run.best_epoch = epoch
        tree.save_checkpoint(make_checkpoint(run, epoch, tree), weights_dir / f"best{tree.SUFFIX}")
    stop = patience_ran_out(epoch, run.best_epoch, opt.patience)
    if checkpointed or stop:
        tree.save_checkpoint(make_checkpoint(run, epoch, tree), weights_dir / f"last{tree.SUFFIX}")
    if stop:
        print(f"Stopping early: no improvement in the last {opt.patience} epochs (best epoch {run.best_epoch + 1})")
    return tree.broadcast_flag(stop)


def train(opt, tree):
    """A whole run: setup, the epochs, then (rank 0) the plots and the final validation of the best weights.
    Returns the run folder."""
    run = setup(opt, tree)
    try:
        return train_epochs(run, tree)
    finally:
        if run.folder is not None:
            run.folder.release()


def train_epochs(run, tree):
    """train's epochs and final validation, on a run set up."""
    opt, save_dir = run.opt, run.save_dir
    print(f"Training {opt.mode} for {opt.epochs} epochs on process {run.rank} of {run.world_size}, "
          f"results in {save_dir}")
    start = time.time()
    for epoch in range(run.start_epoch, opt.epochs):
        started = time.time()
        losses = train_one_epoch(run, epoch, tree)
        if end_epoch(run, epoch, losses, started, tree):
            break
    run.train_loader.close()  # its workers have loaded batches of an epoch that will not run

    if run.rank == 0:
        print(f"\n{epoch + 1 - run.start_epoch} epochs completed in {(time.time() - start) / 3600:.3f} hours.")
        plot_results(save_dir / "results.csv")
        best_path = save_dir / "weights" / f"best{tree.SUFFIX}"
        print(f"\nValidating {best_path} (epoch {run.best_epoch + 1}):")
        run.ema.ema.load_state_dict(tree.load_checkpoint(best_path)["ema"])
        tree.validate.run(run.ema.ema, run.val_loader, run.names, run.device, save_dir=save_dir, plots=True,
                          verbose=True, save_json=True, amp=run.amp)
        run.val_loader.close()
        run.tensorboard.close()
        print(f"Results saved to {save_dir}")
    tree.close_distributed()
    return save_dir
