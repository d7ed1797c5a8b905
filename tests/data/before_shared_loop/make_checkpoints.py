"""How last.pt and last.pkl here were made: with the trees of commit 29fbbc5, the last before the shared training
loop (yolocore/training/), a run of 3 epochs stopped after its first, so that it can still be resumed.

    git worktree add /tmp/oldmain 29fbbc5
    python tests/data/before_shared_loop/make_checkpoints.py /tmp/oldmain pytorch /tmp/old
    python tests/data/before_shared_loop/make_checkpoints.py /tmp/oldmain jittor /tmp/old
    cp /tmp/old/runs/pytorch/weights/last.pt /tmp/old/runs/jittor/weights/last.pkl tests/data/before_shared_loop/

The model is yolov5n at width 0.03125 (small files); the data is the synthetic set of
make_synthetic_dataset(OUT / "syn", n_train=8, n_val=4, imgsz=64, seed=1)."""
import importlib
import sys
from pathlib import Path

import yaml


def main(old_checkout, tree_name, out):
    sys.path.insert(0, old_checkout)
    if tree_name == "jittor":
        importlib.import_module("YOLOv5Jittor")  # jittor's build flags first
    train = importlib.import_module("YOLOv5Jittor.train" if tree_name == "jittor" else "YOLOv5Pytorch.train")
    make_synthetic_dataset = importlib.import_module("yolocore.synthetic").make_synthetic_dataset
    out = Path(out)
    data = make_synthetic_dataset(out / "syn", n_train=8, n_val=4, imgsz=64, seed=1)
    cfg = yaml.safe_load(open(Path(old_checkout) / "yolocore" / "models" / "yolov5n.yaml"))
    cfg["width_multiple"] = 0.03125
    (out / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    real = train.train_one_epoch

    def stopped(ctx, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(ctx, epoch)

    train.train_one_epoch = stopped
    try:
        train.train(train.parse_opt(["--data", str(data), "--cfg", str(out / "tiny.yaml"), "--imgsz", "64",
                                     "--batch-size", "4", "--workers", "0", "--epochs", "3", "--noval",
                                     "--project", str(out / "runs"), "--name", tree_name]))
    except KeyboardInterrupt:
        print("stopped after epoch 0")


if __name__ == "__main__":
    main(*sys.argv[1:])
