"""Training-step time of the Jittor tree against the PyTorch tree: same mosaic batch, same weights, same hyp.

Steps, each with its own models and optimizer (train.py's build_optimizer: SGD, three groups, nesterov):
- train: model forward + ComputeLoss + backward + gradient clipping (norm 10) + SGD step, for each --models;
- KD: student forward with the --layers features, frozen teacher forward, ComputeLoss + kd_weight * FGDLoss,
  backward, clipping and SGD step over student + FGD parameters, for each --models other than --teacher.
EMA updates are left out (train.py does one per optimizer step in both trees).
Each framework configuration lives in its own child process: PyTorch, Jittor with oneDNN (use_mkl=1) and Jittor
without (use_mkl=0; Jittor reads use_mkl once, at import). The parent times round-robin: every step runs in every
configuration in turn, so load from other processes spreads over all of them; medians are reported. Warm-up rounds
(where Jittor JIT-compiles its kernels) are not timed. Jittor without oneDNN is ~70x slower, so it gets its own
(small) round counts. The first-step loss of every configuration is printed as a check that all compute the same
thing. OMP_WAIT_POLICY defaults to PASSIVE (see benchmarks/bench_train.py); the load average is printed.

    python benchmarks/bench_frameworks.py [--models yolov5n yolov5s] [--imgsz 320] [--batch-size 16] [--iters 5]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Before torch or jittor loads OpenMP: threads that spin-wait at barriers while co-tenant processes hold the cores
# make every op of a busy shared CPU tenfold slower. OMP_WAIT_POLICY given by the caller wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from yolocore.training.host_memory import retain_freed_memory
from yolocore.training.recipe import loss_gains, scaled_weight_decay

GOAL_RATIO = 1.5  # the goal: Jittor (with oneDNN) within 1.5x of PyTorch on the CPU
CONFIGS = {  # name: (framework, extra environment)
    "PyTorch": ("torch", {}),
    "Jittor oneDNN": ("jittor", {"use_mkl": "1"}),
    "Jittor no oneDNN": ("jittor", {"use_mkl": "0"}),
}


def load_text():
    return "load average (1/5/15 min) " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def step_names(args):
    names = [f"{m} train" for m in args.models]
    return names + [f"{m} KD <- {args.teacher}" for m in args.models if m != args.teacher]


def prepare(args, folder):
    """The shared inputs, made once with the PyTorch tree: one mosaic batch, the hyp and every model's weights."""
    import torch

    from benchmarks.bench_train import data_and_hyp, memory_batch
    from YOLOv5Pytorch.KD.fgd import FGDLoss
    from YOLOv5Pytorch.models.yolo import Model
    from YOLOv5Pytorch.utils.framework import init_seeds, state_dict_to_numpy

    data, hyp = data_and_hyp(args.data)
    im, targets = memory_batch(data, hyp, args.imgsz, args.batch_size, torch.device("cpu"))
    arrays = {"images": im.numpy(), "targets": targets.numpy()}
    init_seeds(0)
    models = {}
    for cfg in dict.fromkeys([*args.models, args.teacher]):
        models[cfg] = Model(cfg, nc=data["nc"])
        arrays.update({f"{cfg}/{k}": v for k, v in state_dict_to_numpy(models[cfg].state_dict()).items()})
    for cfg in args.models:
        if cfg != args.teacher:
            fgd = fgd_for(FGDLoss, models[cfg], models[args.teacher], args.layers, hyp)
            arrays.update({f"fgd {cfg}/{k}": v for k, v in state_dict_to_numpy(fgd.state_dict()).items()})
    np.savez(Path(folder) / "inputs.npz", **arrays)
    (Path(folder) / "setup.json").write_text(json.dumps({"hyp": hyp, "nc": data["nc"], "boxes": len(targets)}))
    return len(targets), data["nc"]


def fgd_for(fgd_class, student, teacher, layers, hyp):
    return fgd_class(student.feature_channels(layers), teacher.feature_channels(layers), temp=hyp["fgd_temp"],
                     alpha_fgd=hyp["fgd_alpha"], beta_fgd=hyp["fgd_beta"], gamma_fgd=hyp["fgd_gamma"],
                     lambda_fgd=hyp["fgd_lambda"])


def weights(arrays, prefix):
    return {k[len(prefix) + 1 :]: v for k, v in arrays.items() if k.startswith(prefix + "/")}


def torch_steps(args, arrays, hyp, nc):
    """name -> a function doing one step and returning its loss, for the PyTorch tree."""
    import torch

    from YOLOv5Pytorch.KD.fgd import FGDLoss
    from YOLOv5Pytorch.models.yolo import Model
    from YOLOv5Pytorch.train import build_optimizer
    from YOLOv5Pytorch.utils.framework import state_dict_from_numpy
    from YOLOv5Pytorch.utils.loss import ComputeLoss

    im, targets = torch.from_numpy(arrays["images"]), torch.from_numpy(arrays["targets"])

    def model(cfg):
        m = Model(cfg, nc=nc)
        m.load_state_dict(state_dict_from_numpy(weights(arrays, cfg)))
        return m

    def step(net, modules, extra_loss=None):
        compute_loss = ComputeLoss(net, loss_gains(hyp, net.model[-1].nl, nc, args.imgsz))
        optimizer = build_optimizer(modules, hyp, scaled_weight_decay(hyp, args.batch_size))
        params = [p for m in modules for p in m.parameters()]

        def run():
            if extra_loss is None:
                loss, _ = compute_loss(net(im), targets)
            else:
                preds, feats = net(im, feature_layers=args.layers)
                loss = compute_loss(preds, targets)[0] + extra_loss(feats)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, max_norm=10.0)
            optimizer.step()
            optimizer.zero_grad()
            return loss.item()

        return run

    steps = {}
    for cfg in args.models:
        net = model(cfg).train()
        steps[f"{cfg} train"] = step(net, [net])
    teacher = model(args.teacher).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    for cfg in args.models:
        if cfg == args.teacher:
            continue
        student = model(cfg).train()
        fgd = fgd_for(FGDLoss, student, teacher, args.layers, hyp)
        fgd.load_state_dict(state_dict_from_numpy(weights(arrays, f"fgd {cfg}")))

        def distil(s_feats, fgd=fgd):
            with torch.no_grad():
                t_feats = teacher(im, feature_layers=args.layers)[1]
            return hyp["kd_weight"] * fgd(s_feats, t_feats, targets)[0]

        steps[f"{cfg} KD <- {args.teacher}"] = step(student, [student, fgd], distil)
    environment = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    return steps, environment, lambda: None


def jittor_steps(args, arrays, hyp, nc):
    """name -> a function doing one step and returning its loss, for the Jittor tree."""
    # isort: off
    import YOLOv5Jittor  # noqa: F401  (jittor's CPU build flags, which must be set before jittor loads)
    import jittor as jt
    # isort: on

    from YOLOv5Jittor.KD.fgd import FGDLoss
    from YOLOv5Jittor.models.yolo import Model
    from YOLOv5Jittor.train import build_optimizer
    from YOLOv5Jittor.utils.framework import state_dict_from_numpy
    from YOLOv5Jittor.utils.jittor_nn import clip_grad_norm
    from YOLOv5Jittor.utils.loss import ComputeLoss

    im, targets = jt.array(arrays["images"]), jt.array(arrays["targets"])

    def model(cfg):
        m = Model(cfg, nc=nc)
        m.load_state_dict(state_dict_from_numpy(weights(arrays, cfg)))
        return m

    def step(net, modules, extra_loss=None):
        compute_loss = ComputeLoss(net, loss_gains(hyp, net.model[-1].nl, nc, args.imgsz))
        optimizer = build_optimizer(modules, hyp, scaled_weight_decay(hyp, args.batch_size))

        def run():
            if extra_loss is None:
                loss, _ = compute_loss(net(im), targets)
            else:
                preds, feats = net(im, feature_layers=args.layers)
                loss = compute_loss(preds, targets)[0] + extra_loss(feats)
            optimizer.backward(loss)
            clip_grad_norm(optimizer, 10.0)  # as the tree's optimizer_step
            optimizer.step()
            jt.sync_all()  # lazy execution: the step has only been recorded until now
            return loss.item()

        return run

    steps = {}
    for cfg in args.models:
        net = model(cfg).train()
        steps[f"{cfg} train"] = step(net, [net])
    teacher = model(args.teacher).eval()  # Jittor's eval() also stops the gradients of its parameters
    for cfg in args.models:
        if cfg == args.teacher:
            continue
        student = model(cfg).train()
        fgd = fgd_for(FGDLoss, student, teacher, args.layers, hyp)
        fgd.load_state_dict(state_dict_from_numpy(weights(arrays, f"fgd {cfg}")))

        def distil(s_feats, fgd=fgd):
            with jt.no_grad():
                t_feats = teacher(im, feature_layers=args.layers)[1]
            return hyp["kd_weight"] * fgd(s_feats, t_feats, targets)[0]

        steps[f"{cfg} KD <- {args.teacher}"] = step(student, [student, fgd], distil)
    onednn = bool(jt.compile_extern.use_mkl and jt.compile_extern.mkl_ops is not None)
    environment = (f"jittor {jt.__version__}, use_mkl={os.environ.get('use_mkl')}, "
                   f"oneDNN {'in use' if onednn else 'NOT in use'}, "
                   f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    return steps, environment, jt.sync_all


def child(args):
    """Serves the parent: builds every step, answers 'ready', then runs the step named on each stdin line."""
    # The protocol gets the real stdout; everything else printed (Jittor's compile progress) goes to stderr.
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    retain_freed_memory()  # as train.py does, in both trees
    os.dup2(2, 1)
    folder = Path(args.child_work)
    setup = json.loads((folder / "setup.json").read_text())
    with np.load(folder / "inputs.npz") as npz:
        arrays = dict(npz)
    build = torch_steps if args.child == "torch" else jittor_steps
    steps, environment, sync = build(args, arrays, setup["hyp"], setup["nc"])
    protocol.write(json.dumps({"environment": environment}) + "\n")
    for line in sys.stdin:
        name = line.strip()
        sync()
        start = time.perf_counter()
        loss = steps[name]()
        protocol.write(json.dumps({"seconds": time.perf_counter() - start, "loss": loss}) + "\n")


class Child:
    """One framework configuration in its own process, driven one step at a time."""

    def __init__(self, name, args, folder):
        framework, env = CONFIGS[name]
        self.name, self.log = name, tempfile.TemporaryFile("w+")
        flags = [f"--{k.replace('_', '-')}" for k in ("imgsz", "batch_size", "teacher")]
        values = [str(getattr(args, k)) for k in ("imgsz", "batch_size", "teacher")]
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", framework, "--child-work", str(folder),
               *[x for pair in zip(flags, values) for x in pair], "--models", *args.models,
               "--layers", *map(str, args.layers)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env={**os.environ, **env})
        self.environment = self.reply()["environment"]

    def reply(self):
        line = self.proc.stdout.readline()
        if not line:
            self.log.seek(0)
            sys.exit(f"{self.name}: benchmark child failed (exit {self.proc.wait()})\n{self.log.read()[-3000:]}")
        return json.loads(line)

    def run(self, step):
        self.proc.stdin.write(step + "\n")
        self.proc.stdin.flush()
        return self.reply()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()
        self.log.close()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["yolov5n", "yolov5s"], help="model yamls (names or paths)")
    p.add_argument("--teacher", default="yolov5s", help="KD teacher; KD steps are timed for the other --models")
    p.add_argument("--layers", type=int, nargs="+", default=[17, 20, 23], help="distilled layers (--kd-layers)")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--iters", type=int, default=5, help="timed rounds (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (Jittor compiles its kernels)")
    p.add_argument("--iters-no-onednn", type=int, default=1, help="timed rounds of Jittor without oneDNN; 0 skips it")
    p.add_argument("--data", default="", help="dataset yaml; empty = the built-in synthetic dataset")
    p.add_argument("--child", choices=["torch", "jittor"], help=argparse.SUPPRESS)
    p.add_argument("--child-work", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def ms(times):
    return f"{statistics.median(times) * 1e3:.0f}" if times else "-"


def main():
    args = parse_args()
    if args.child:
        child(args)
        return
    rounds = {"PyTorch": (args.warmup, args.iters), "Jittor oneDNN": (args.warmup, args.iters)}
    if args.iters_no_onednn:
        rounds["Jittor no oneDNN"] = (1, args.iters_no_onednn)
    names = step_names(args)
    with tempfile.TemporaryDirectory() as folder:
        boxes, nc = prepare(args, folder)
        print(f"bench_frameworks: imgsz {args.imgsz}, batch {args.batch_size} ({boxes} boxes, {nc} classes), "
              f"KD layers {args.layers}; {cpu_name()}, {os.cpu_count()} CPUs, "
              f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; {load_text()}", flush=True)
        children = {}
        for name in rounds:  # one at a time, so that start-up compiles do not compete
            started = time.perf_counter()
            children[name] = Child(name, args, folder)
            print(f"  {name}: {children[name].environment}; started in {time.perf_counter() - started:.0f} s",
                  flush=True)
        times = {(c, s): [] for c in rounds for s in names}
        first_loss = {}
        started = time.perf_counter()
        for r in range(max(w + n for w, n in rounds.values())):
            for step in names:
                for name, (warmup, iters) in rounds.items():
                    if r < warmup + iters:
                        result = children[name].run(step)
                        first_loss.setdefault((name, step), result["loss"])
                        if r >= warmup:
                            times[name, step].append(result["seconds"])
            print(f"  round {r + 1} done at {time.perf_counter() - started:.0f} s; {load_text()}", flush=True)
        for c in children.values():
            c.close()

    configs = list(rounds)
    print(f"\nmedian ms/step ({', '.join(f'{c}: {rounds[c][1]} timed after {rounds[c][0]} warm-up' for c in configs)})")
    header = "| step | " + " | ".join(f"{c} ms" for c in configs) + " | " + " | ".join(
        f"{c} / PyTorch" for c in configs[1:]) + " |"
    print(header + "\n|---|" + "---:|" * (2 * len(configs) - 1))
    ratios = {}
    for step in names:
        base = statistics.median(times["PyTorch", step])
        cells = [ms(times[c, step]) for c in configs]
        for c in configs[1:]:
            ratios[c, step] = statistics.median(times[c, step]) / base
        print(f"| {step} | " + " | ".join(cells) + " | " + " | ".join(
            f"{ratios[c, step]:.2f}x" for c in configs[1:]) + " |")
    print("\nfirst-step loss (same batch and weights; differences are float32 rounding):")
    for step in names:
        print(f"  {step}: " + ", ".join(f"{c} {first_loss[c, step]:.6f}" for c in configs))
    worst = max(ratios["Jittor oneDNN", s] for s in names)
    verdict = "met" if worst <= GOAL_RATIO else "NOT met"
    print(f"\nJittor (oneDNN) / PyTorch, worst step: {worst:.2f}x (goal <= {GOAL_RATIO}x): {verdict}")
    print(load_text())


if __name__ == "__main__":
    main()
