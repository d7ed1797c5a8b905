"""Seconds per image of visualize.py (both forward passes, the combined figure and the single panels), as a user
runs it: a teacher and a KD student with FGD align convs (random weights: drawing does not depend on training) as
in the reduced CPU study (--models n: yolov5n, and yolov5n at half its width) or the GPU study (--models s: yolov5s
and yolov5n), imgsz 512, layers 17 20 23. Each run's main() is timed, less the one-off setup (loading both
checkpoints and the check on a blank image, timed apart), and divided by the number of images; the median of the
runs is printed, with the forward passes alone for comparison, in wall-clock seconds and in CPU seconds of the
process (all its threads): on a machine shared with other jobs the wall clock mostly measures the others. Prints
figures only; run from the repository root with `python -m benchmarks.bench_visualize [--tree jittor]
[--source datasets/NWPU/images/val]` (default source: synthetic 512 x 512 images).
"""
import argparse
import importlib
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: idle OpenMP threads sleep, not spin


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", choices=["pytorch", "jittor"], default="pytorch")
    p.add_argument("--models", choices=["n", "s"], default="n", help="teacher and student sizes (see above)")
    p.add_argument("--source", help="a folder of images (default: synthetic ones made in a temporary folder)")
    p.add_argument("--images", type=int, default=8, help="how many images of --source each run draws")
    p.add_argument("--imgsz", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more visualize.py flags, last")
    return p.parse_args()


def write_checkpoints(root, tree, models="n"):
    """teacher and KD student checkpoints of the tree (written by PyTorch, converted for Jittor)."""
    from yolocore.config import load_model_cfg
    from yolocore.data.synthetic import SYNTHETIC_NAMES
    from YOLOv5Pytorch.KD.fgd import FGDLoss
    from YOLOv5Pytorch.models.yolo import Model
    from YOLOv5Pytorch.utils.checkpoint import save_checkpoint
    from YOLOv5Pytorch.utils.framework import init_seeds

    init_seeds(0)
    layers = [17, 20, 23]
    student_cfg = load_model_cfg("yolov5n.yaml")
    if models == "n":
        student_cfg["width_multiple"] = 0.125
    teacher, student = Model(load_model_cfg(f"yolov5{models}.yaml"), nc=5), Model(student_cfg, nc=5)
    fgd = FGDLoss(student.feature_channels(layers), teacher.feature_channels(layers))
    meta = {"nc": 5, "names": list(SYNTHETIC_NAMES), "hyp": {"fgd_temp": 0.5}}
    paths = {"teacher": root / "teacher.pt", "student": root / "student.pt"}
    save_checkpoint({"model": teacher.state_dict(), "yaml": teacher.yaml, **meta}, paths["teacher"])
    save_checkpoint({"model": student.state_dict(), "yaml": student.yaml, "fgd": fgd.state_dict(),
                     "kd_layers": layers, **meta}, paths["student"])
    if tree == "jittor":
        from YOLOv5Jittor.utils.checkpoint import load_checkpoint
        from YOLOv5Jittor.utils.checkpoint import save_checkpoint as jt_save
        for name, path in list(paths.items()):
            paths[name] = path.with_suffix(".pkl")
            jt_save(load_checkpoint(path), paths[name])
    return paths


def source_folder(args, root):
    """--images images of --source (hard links), or synthetic ones at --imgsz."""
    folder = root / "images"
    if args.source is None:
        from yolocore.data.synthetic import make_synthetic_dataset
        make_synthetic_dataset(root / "syn", n_train=1, n_val=args.images, imgsz=args.imgsz, seed=0)
        return root / "syn" / "images" / "val"
    folder.mkdir()
    for f in sorted(Path(args.source).iterdir())[: args.images]:
        (folder / f.name).hardlink_to(f.resolve())
    return folder


@contextmanager
def timed(into):
    """Append (wall seconds, CPU seconds of this process, all its threads) of the block to into."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    into.append((time.perf_counter() - wall, time.process_time() - cpu))


def main():
    args = parse()
    if args.tree == "jittor":
        import YOLOv5Jittor  # noqa: F401  (jittor's CPU build flags, before jittor and torch load)
    vis = importlib.import_module(f"YOLOv5{'Jittor' if args.tree == 'jittor' else 'Pytorch'}.visualize")
    from yolocore.plots.fgd import letterboxed_sample

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths, source = write_checkpoints(root, args.tree, args.models), source_folder(args, root)
        opt = vis.parse_opt(["--teacher", str(paths["teacher"]), "--student", str(paths["student"]), "--source",
                             str(source), "--imgsz", str(args.imgsz), "--device", "cpu", "--project",
                             str(root / "out"), *args.extra])
        device = "cpu"
        vis.main(opt)  # warm-up: compiles (Jittor), caches, fonts
        setups, totals, forwards = [], [], []
        for _ in range(args.repeats):
            with timed(setups):
                plan = vis.prepare(opt, device)
            with timed(totals):
                out = vis.main(opt)
            with timed(forwards):
                for f in plan.files:
                    vis.analyse_image(plan, *letterboxed_sample(f, args.imgsz, plan.stride, 5), opt, device)
        n = len(plan.files)
        size = sum(p.stat().st_size for p in out.rglob("*.png")) / n / 2**20
        files = len(list(out.rglob("*.png"))) / n
    print(f"{args.tree}, models {args.models}, {n} images of {args.source or 'synthetic'} at imgsz {args.imgsz}, "
          f"layers {plan.layers}, {args.repeats} runs (medians); {files:.0f} PNGs and {size:.2f} MB an image; "
          f"load average {os.getloadavg()[0]:.1f}")
    for clock, index in (("wall", 0), ("CPU", 1)):
        setup = statistics.median(s[index] for s in setups)
        total = statistics.median((t[index] - setup) / n for t in totals)
        forward = statistics.median(f[index] / n for f in forwards)
        print(f"  {clock:4s} s/image: visualize.py {total:6.3f} = forward passes {forward:6.3f} + drawing and writing "
              f"{total - forward:6.3f}  (setup {setup:.2f} s a run, not included)")

if __name__ == "__main__":
    sys.exit(main())
