"""Train a YOLOv5 teacher or student (--mode train), or distil a teacher into a student with FGD (--mode KD).

    python YOLOv5Jittor/train.py --cfg yolov5n.yaml --imgsz 256 --epochs 30          # built-in synthetic data
    python YOLOv5Jittor/train.py --cfg yolov5s.yaml --data data/NWPU.yaml --imgsz 512 --epochs 150 --batch-size 32
    python YOLOv5Jittor/train.py --mode KD --cfg yolov5n.yaml --teacher runs/train/exp/weights/best.pkl --data ...
    python YOLOv5Jittor/train.py --resume runs/train/exp2/weights/last.pkl
    mpirun -np 4 python YOLOv5Jittor/train.py --batch-size 64 ...                # MPI; --batch-size is global
"""
import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# isort: off
import YOLOv5Jittor  # noqa: F401  (jittor's CPU build flags, which must be set before jittor loads)
import jittor as jt
# isort: on
import numpy as np
from tqdm import tqdm

from yolocore.anchors import check_anchors, label_wh
from yolocore.checkpoint_io import find_last_checkpoint
from yolocore.cli import DEFAULT_CFG, parse_train_options, run_script
from yolocore.config import ROOT, increment_path, load_data_yaml, load_hyp, save_yaml
from yolocore.host_memory import retain_freed_memory
from yolocore.init import perturbed
from yolocore.metrics import fitness
from yolocore.plots import plot_images, plot_labels, plot_results
from yolocore.recipe import (
    FGD_KEYS,
    LOSS_KEYS,
    NBS,
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
from yolocore.results import append_results, clear_results, truncate_results
from yolocore.synthetic import make_synthetic_dataset
from yolocore.training_record import add_epoch, describe_device, training_record
from YOLOv5Jittor import val as validate
from YOLOv5Jittor.KD.distiller import build_fgd, load_teacher
from YOLOv5Jittor.models.yolo import Model
from YOLOv5Jittor.utils.checkpoint import FRAMEWORK, SUFFIX, load_checkpoint, save_checkpoint
from YOLOv5Jittor.utils.dataloader import create_dataloader, set_epoch
from YOLOv5Jittor.utils.framework import (
    ModelEMA,
    all_reduce_mean,
    autocast,
    barrier,
    broadcast_flag,
    close_distributed,
    images_to_tensor,
    init_distributed,
    init_seeds,
    load_optimizer_state,
    main_process_first,
    mixed_precision,
    optimizer_state,
    parallel,
    state_dict_from_numpy,
    state_dict_to_numpy,
    sync_batchnorm,
)
from YOLOv5Jittor.utils.jittor_nn import BatchNorm2d, anchors_in_strides
from YOLOv5Jittor.utils.loss import ComputeLoss

TREE = Path(__file__).resolve().parent


def parse_opt(argv=None):
    return parse_train_options(argv, __doc__, TREE / "hyp.scratch-low.yaml", SUFFIX, "mpirun",
                               "kept for the PyTorch tree's flags; no effect")


def prepare_data(opt):
    if not opt.data:
        opt.data = str(make_synthetic_dataset(ROOT / "datasets" / "synthetic"))
    return load_data_yaml(opt.data)


def build_model(opt, data, device, resumed=None):
    """A resumed run's own model; else, as ultralytics, the --cfg model (by default the --weights checkpoint's,
    or yolov5s) with whatever of --weights fits: a checkpoint with other classes keeps its backbone and neck."""
    ckpt = load_checkpoint(opt.weights) if opt.weights else None
    cfg = resumed["yaml"] if resumed else opt.cfg or (ckpt["yaml"] if ckpt else DEFAULT_CFG)
    model = Model(cfg, nc=data["nc"])
    if ckpt:
        weights = ckpt.get("ema") or ckpt["model"]
        state = model.state_dict()
        fitting = {k: v for k, v in weights.items() if k in state and tuple(v.shape) == tuple(state[k].shape)}
        # Jittor's load_state_dict loads the keys it is given, in their own dtypes: cast to the model's.
        model.load_state_dict({k: np.asarray(v).astype(str(state[k].dtype)) for k, v in fitting.items()})
        # BatchNorm's batch counters count in neither total: Jittor keeps none, so its checkpoints lack them.
        counted = [k for k in state if not k.endswith("num_batches_tracked")]
        print(f"Transferred {sum(k in fitting for k in counted)}/{len(counted)} items from {opt.weights}")
    if not resumed and opt.perturb:
        model.load_state_dict(state_dict_from_numpy(perturbed(state_dict_to_numpy(model.state_dict()), opt.perturb)))
        print(f"Starting weights perturbed by {opt.perturb:g} (--perturb: a calibration run)")
    model.names = data["names"]
    return model


def build_optimizer(modules, hyp, weight_decay):
    """SGD with three groups: biases (group 0, warmed up from warmup_bias_lr), weights with decay,
    and normalisation weights without decay."""
    biases, decayed, norm_weights = [], [], []
    norm_types = (BatchNorm2d, jt.nn.LayerNorm)
    for module in modules:
        for m in module.modules():
            for name, p in m.named_parameters(recurse=False):
                if p.is_stop_grad():  # Jittor lists buffers (BatchNorm statistics, anchors) among parameters
                    continue
                if name == "bias":
                    biases.append(p)
                elif name == "weight" and isinstance(m, norm_types):
                    norm_weights.append(p)
                else:
                    decayed.append(p)
    optimizer = jt.optim.SGD(biases, lr=hyp["lr0"], momentum=hyp["momentum"], nesterov=True)
    optimizer.add_param_group({"params": decayed, "weight_decay": weight_decay})
    optimizer.add_param_group({"params": norm_weights, "weight_decay": 0.0})
    for group in optimizer.param_groups:  # Jittor groups read missing values from the optimizer: make them explicit
        group.update(lr=hyp["lr0"], momentum=hyp["momentum"], nesterov=True, weight_decay=group.get("weight_decay", 0))
    return optimizer


def autoanchor(model, dataset, hyp, imgsz, seed):
    det = model.model[-1]
    anchors = (det.anchors * det.stride.view(-1, 1, 1)).view(-1, 2).numpy()
    wh = label_wh(dataset.shapes, dataset.labels, imgsz, np.random.default_rng(seed))
    bpr, new = check_anchors(wh, anchors, hyp["anchor_t"], np.random.default_rng(seed))
    if new is None:
        print(f"AutoAnchor: best possible recall {bpr:.3f} with the current anchors")
        return
    det.anchors.update(anchors_in_strides(new.astype(np.float32).reshape(det.anchors.shape), det.stride.numpy()))
    print(f"AutoAnchor: new anchors with best possible recall {bpr:.3f}")


def optimizer_step(ctx):
    ctx["optimizer"].clip_grad_norm(10.0, 2)
    ctx["optimizer"].step()
    ctx["ema"].update(ctx["model"])


def train_one_epoch(ctx, epoch):
    """One pass over the training data; returns the mean losses (detection, then FGD terms in KD mode)."""
    model, optimizer, opt, hyp = ctx["parallel_model"], ctx["optimizer"], ctx["opt"], ctx["hyp"]
    loader, device, fgd, main = ctx["train_loader"], ctx["device"], ctx["parallel_fgd"], ctx["rank"] == 0
    model.train()
    if fgd is not None:
        fgd.train()
    set_epoch(loader, epoch)
    nb = len(loader)
    nw = warmup_iterations(hyp, nb)
    lf = ctx["lf"]
    kd_weight = kd_weight_at(hyp, epoch, opt.epochs)
    for group in optimizer.param_groups:
        group["lr"] = hyp["lr0"] * lf(epoch)
    mloss = np.zeros(len(LOSS_KEYS) + (len(FGD_KEYS) if fgd is not None else 0))
    if main:
        print(("\n" + "%11s" * 6) % ("Epoch", "box_loss", "obj_loss", "cls_loss", "Instances", "Size"))
    bar = tqdm(enumerate(loader), total=nb, bar_format="{l_bar}{bar:10}{r_bar}", disable=not main)
    for i, (imgs, targets, paths, _) in bar:
        ni = i + nb * epoch
        if ni <= nw:
            ctx["accumulate"], values = warmup(ni, nw, hyp, hyp["lr0"] * lf(epoch), opt.batch_size)
            for group, (lr, momentum) in zip(optimizer.param_groups, values):
                group["lr"], group["momentum"] = lr, momentum
        im = images_to_tensor(imgs, device)
        targets = jt.array(targets)
        with autocast(device, ctx["amp"]):
            if fgd is None:
                preds = model(im)
            else:
                # The frozen teacher first: it frees its activations as it goes, so its peak does not add up with
                # the activations the student keeps for the backward pass.
                with jt.no_grad():
                    t_feats = ctx["teacher"](im, feature_layers=opt.kd_layers)[1]
                preds, s_feats = model(im, feature_layers=opt.kd_layers)
            loss, items = ctx["compute_loss"](preds, targets)
            # YOLOv5's loss is summed over this process's images and the processes average their gradients:
            # times world_size (as ultralytics does), a step equals a single process's on the same global batch.
            # FGD's terms are means over images already, so averaging keeps them as they are.
            loss = loss * ctx["world_size"]
            if fgd is not None:
                kd_loss, kd_terms = fgd(s_feats, t_feats, targets)
                loss = loss + kd_weight * kd_loss
                items = jt.concat((items, kd_weight * jt.concat((kd_loss.detach().reshape(1), kd_terms))))
        optimizer.backward(loss)
        # Jittor's backward is lazy: unexecuted, each accumulated batch's graph and activations would live until the
        # optimizer step (four batches' worth at batch 16: a yolov5n trainer on NWPU held 3.3 GB instead of 1.5,
        # in KD mode 3.7 instead of 1.6).
        jt.sync([g for group in optimizer.param_groups for g in group["grads"]])
        # The last batch always steps: no gradient crosses an epoch boundary, so --resume continues exactly.
        if ni - ctx["last_opt_step"] >= ctx["accumulate"] or i == nb - 1:
            optimizer_step(ctx)
            ctx["last_opt_step"] = ni
        mloss = (mloss * i + items.numpy()) / (i + 1)
        if not np.isfinite(loss.item()):
            raise FloatingPointError(f"epoch {epoch} batch {i}: loss is {loss.item()}; lower lr0 or check the labels")
        bar.set_description(("%11s" + "%11.4g" * 3 + "%11i" * 2)
                            % (f"{epoch + 1}/{opt.epochs}", *mloss[:3].tolist(), targets.shape[0], im.shape[-1]))
        if main and epoch == ctx["start_epoch"] and i < 3:
            plot_images(imgs, targets.numpy(), paths, ctx["save_dir"] / f"train_batch{i}.jpg", ctx["names"])
    return all_reduce_mean(mloss).tolist()


def make_checkpoint(ctx, epoch):
    opt = ctx["opt"]
    return {
        "framework": FRAMEWORK, "epoch": epoch, "best_fitness": ctx["best_fitness"], "best_epoch": ctx["best_epoch"],
        "model": state_dict_to_numpy(ctx["model"].state_dict()),
        "ema": state_dict_to_numpy(ctx["ema"].ema.state_dict()),
        "updates": ctx["ema"].updates, "optimizer": optimizer_state(ctx["optimizer"]),
        "fgd": state_dict_to_numpy(ctx["fgd"].state_dict()) if ctx["fgd"] is not None else None,
        "kd_layers": list(opt.kd_layers) if opt.mode == "KD" else None,
        "yaml": ctx["model"].yaml, "nc": len(ctx["names"]), "names": list(ctx["names"]),
        "hyp": ctx["hyp"], "opt": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opt).items()},
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "training": dict(ctx["training"]),
    }


def resume_options(opt):
    path = Path(opt.project if opt.resume == "last" else opt.resume)
    if path.is_dir() or opt.resume == "last":  # the newest run under the project, or a run's folder
        path = find_last_checkpoint(path, SUFFIX)
    ckpt = load_checkpoint(path)
    if ckpt["framework"] != FRAMEWORK or not ckpt.get("optimizer") or "opt" not in ckpt:
        raise ValueError(f"--resume {path}: not a {FRAMEWORK} training checkpoint; resume it with the tree that wrote "
                         "it, or start a new run from its weights with --weights")
    resumed = argparse.Namespace(**ckpt["opt"])
    resumed.resume, resumed.weights, resumed.exist_ok = str(path), "", True
    resumed.device, resumed.workers = opt.device or resumed.device, opt.workers
    resumed.cache = opt.cache or vars(resumed).get("cache", "")
    resumed.sync_bn = opt.sync_bn or vars(resumed).get("sync_bn", False)
    resumed.noamp = vars(resumed).get("noamp", False)  # the run's own precision, also when --noamp is given now
    return resumed, ckpt


def restore(ctx, ckpt):
    ctx["model"].load_state_dict(ckpt["model"])
    ctx["ema"].ema.load_state_dict(ckpt["ema"])
    ctx["ema"].updates = ckpt["updates"]
    load_optimizer_state(ctx["optimizer"], ckpt["optimizer"])
    if ctx["fgd"] is not None:
        ctx["fgd"].load_state_dict(ckpt["fgd"])
    if ckpt["epoch"] + 1 >= ctx["opt"].epochs:
        raise ValueError(f"{ctx['opt'].resume}: this run already finished its {ctx['opt'].epochs} epochs")
    return ckpt["epoch"] + 1, ckpt["best_fitness"], ckpt["best_epoch"]


def setup(opt):
    """Everything a run needs, as one context dict: folders, data, model, teacher and FGD, optimizer, EMA, and
    the state of a resumed run. Both trees build the same context, so a test can step them in lockstep.
    Under mpirun every process builds it: its share of the data, the teacher, rank 0's weights; rank 0 alone
    writes files and validates."""
    ckpt = None
    if opt.resume:
        opt, ckpt = resume_options(opt)
        save_dir = Path(opt.save_dir)
    else:
        save_dir = increment_path(Path(opt.project) / opt.name, opt.exist_ok)
        opt.save_dir = str(save_dir)
    rank, world_size, device = init_distributed(opt.device)
    barrier()  # every process has named the run folder before rank 0 creates it
    batch_size = per_process_batch(opt.batch_size, world_size)
    hyp = ckpt["hyp"] if ckpt else load_hyp(opt.hyp, kd=opt.mode == "KD", verbose=rank == 0)
    with main_process_first(rank):
        data = prepare_data(opt)
    names = data["names"]
    init_seeds(opt.seed, opt.deterministic)
    retain_freed_memory()

    model = build_model(opt, data, device, ckpt)
    if opt.sync_bn:
        model = sync_batchnorm(model, device)
    teacher = load_teacher(opt.teacher, names, device) if opt.mode == "KD" else None
    fgd = build_fgd(model, teacher, opt.kd_layers, hyp, opt.imgsz, device) if teacher is not None else None
    with main_process_first(rank):
        train_loader, dataset = create_dataloader(data["train"], opt.imgsz, batch_size, data["nc"], hyp, augment=True,
                                                  shuffle=True, seed=opt.seed, workers=opt.workers, prefix="train: ",
                                                  rank=rank, world_size=world_size, cache_images=bool(opt.cache),
                                                  persistent=True)
        val_loader = create_dataloader(data["val"], opt.imgsz, batch_size * 2, data["nc"], seed=opt.seed,
                                       workers=opt.workers, prefix="val: ", cache_images=bool(opt.cache),
                                       rect=True, persistent=True)[0] if rank == 0 else None
    # The run folder comes last, once the data's labels and image size are checked: a failed start leaves none.
    if rank == 0:
        (save_dir / "weights").mkdir(parents=True, exist_ok=True)
        save_yaml(save_dir / "hyp.yaml", hyp)
        save_yaml(save_dir / "opt.yaml", vars(opt))
    if not ckpt:
        if rank == 0:
            clear_results(save_dir)
            plot_labels(np.concatenate(dataset.labels, 0), names, save_dir)
        if not opt.noautoanchor:
            autoanchor(model, dataset, hyp, opt.imgsz, opt.seed)

    trained = [model] + ([fgd] if fgd is not None else [])
    amp = mixed_precision(device, opt.noamp)
    ctx = dict(opt=opt, hyp=hyp, device=device, model=model, teacher=teacher, fgd=fgd, names=names,
               optimizer=build_optimizer(trained, hyp, scaled_weight_decay(hyp, opt.batch_size)),
               lf=lr_lambda(opt.epochs, hyp["lrf"], opt.cos_lr), ema=ModelEMA(model),
               accumulate=max(round(NBS / opt.batch_size), 1), save_dir=save_dir,
               compute_loss=ComputeLoss(model, loss_gains(hyp, model.model[-1].nl, data["nc"], opt.imgsz)),
               train_loader=train_loader, val_loader=val_loader, start_epoch=0, best_fitness=-1.0, best_epoch=-1,
               amp=amp, training=training_record(ckpt, describe_device(device, world_size, amp)))
    if ckpt:
        ctx["start_epoch"], ctx["best_fitness"], ctx["best_epoch"] = restore(ctx, ckpt)
        if rank == 0:
            truncate_results(save_dir / "results.csv", ckpt["epoch"])
            print(f"Resuming {opt.resume} from epoch {ctx['start_epoch'] + 1}/{opt.epochs}")
    ctx["last_opt_step"] = ctx["start_epoch"] * len(train_loader) - 1
    # The FGD module's align convs and GcBlocks train too: Jittor's optimizer averages the gradients of every
    # parameter it holds, FGD's included. Checkpoints take ctx's own modules.
    ctx.update(rank=rank, world_size=world_size, parallel_model=parallel(model, device),
               parallel_fgd=parallel(fgd, device) if fgd is not None else None)
    return ctx


def end_epoch(ctx, epoch, losses, started):
    """On rank 0: validate (unless --noval), log the epoch and its time (since `started`), save the last and best
    checkpoints. True, on every process, when patience runs out."""
    if ctx["rank"] != 0:
        return broadcast_flag(False)
    opt, weights_dir = ctx["opt"], ctx["save_dir"] / "weights"
    measured = not opt.noval or epoch + 1 == opt.epochs
    if measured:
        metrics, _ = validate.run(ctx["ema"].ema, ctx["val_loader"], ctx["names"], ctx["device"],
                                  compute_loss=ctx["compute_loss"], amp=ctx["amp"])
    else:
        metrics = (float("nan"),) * 7  # a gap in results.png, not a fake zero
    fit = float(fitness(np.array(metrics[:4])[None])[0])
    lrs = [g["lr"] for g in ctx["optimizer"].param_groups]
    append_results(ctx["save_dir"] / "results.csv", results_row(epoch, losses, metrics, lrs))
    add_epoch(ctx["training"], time.time() - started)
    # Without validation the newest weights are the best guess, and patience has nothing to count. best_fitness
    # starts below any fitness, so the first validated epoch is best even at 0 (the last one, with --noval).
    if not measured or fit > ctx["best_fitness"]:
        ctx["best_fitness"] = max(fit, ctx["best_fitness"]) if measured else ctx["best_fitness"]
        ctx["best_epoch"] = epoch
        save_checkpoint(make_checkpoint(ctx, epoch), weights_dir / f"best{SUFFIX}")
    save_checkpoint(make_checkpoint(ctx, epoch), weights_dir / f"last{SUFFIX}")
    stop = patience_ran_out(epoch, ctx["best_epoch"], opt.patience)
    if stop:
        print(f"Stopping early: no improvement in the last {opt.patience} epochs (best epoch {ctx['best_epoch'] + 1})")
    return broadcast_flag(stop)


def train(opt):
    ctx = setup(opt)
    opt, save_dir = ctx["opt"], ctx["save_dir"]
    print(f"Training {opt.mode} for {opt.epochs} epochs on process {ctx['rank']} of {ctx['world_size']}, "
          f"results in {save_dir}")
    start = time.time()
    for epoch in range(ctx["start_epoch"], opt.epochs):
        started = time.time()
        losses = train_one_epoch(ctx, epoch)
        if end_epoch(ctx, epoch, losses, started):
            break
    ctx["train_loader"].close()  # its workers have loaded batches of an epoch that will not run

    if ctx["rank"] == 0:
        print(f"\n{epoch + 1 - ctx['start_epoch']} epochs completed in {(time.time() - start) / 3600:.3f} hours.")
        plot_results(save_dir / "results.csv")
        best_path = save_dir / "weights" / f"best{SUFFIX}"
        print(f"\nValidating {best_path} (epoch {ctx['best_epoch'] + 1}):")
        ctx["ema"].ema.load_state_dict(load_checkpoint(best_path)["ema"])
        validate.run(ctx["ema"].ema, ctx["val_loader"], ctx["names"], ctx["device"], save_dir=save_dir, plots=True,
                     verbose=True, save_json=True, amp=ctx["amp"])
        ctx["val_loader"].close()
        print(f"Results saved to {save_dir}")
    close_distributed()
    return save_dir


if __name__ == "__main__":
    run_script(lambda: train(parse_opt()))
