"""Entry-point glue shared by the scripts of both trees."""
import argparse
import sys
from pathlib import Path


class MissingPackageError(ModuleNotFoundError):
    """An optional package a script needs for what it was asked (onnx for export.py); the message says how to
    install it."""


def run_script(main):
    """Run main(); bad input (a missing file, an unusable yaml, label or checkpoint), a missing optional package,
    and a path that cannot be written or read (a read-only --project, a full disk, no permission) end the script
    with one line naming it, not a traceback. Other OSErrors, those of no file (a lost worker's pipe), keep theirs."""
    try:
        return main()
    except (FileNotFoundError, MissingPackageError, ValueError) as e:
        sys.exit(f"{Path(sys.argv[0]).name}: error: {e}")
    except OSError as e:
        if e.filename is None:
            raise
        sys.exit(f"{Path(sys.argv[0]).name}: error: {e.filename}: {e.strerror}")


def positive_int(text):
    """argparse type: an integer >= 1 (an epoch count, batch or image size), rejected at the command line."""
    return _int_at_least(text, 1)


def non_negative_int(text):
    """argparse type: an integer >= 0 (a worker count)."""
    return _int_at_least(text, 0)


def fraction(text):
    """argparse type: a number in [0, 1] (a confidence or IoU threshold)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not in [0, 1]")
    return value


def _int_at_least(text, low):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} is below {low}")
    return value


DEFAULT_CFG = "yolov5s.yaml"
NOAMP_HELP = ("float32 everywhere, a KD teacher included: no mixed precision on CUDA (the PyTorch tree's default "
              "there; the Jittor tree always runs float32), for comparing the two trees like with like")
AMP_HELP = ("PyTorch tree: mixed precision on the CPU too, bfloat16 autocast, where the CPU has native bfloat16 "
            "(avx512_bf16 or amx_bf16; float32 elsewhere). Faster, opt-in (docs/speed.md); Jittor runs float32")


def parse_train_options(argv, description, hyp, suffix, launcher, deterministic_help):
    """train.py's options, the same in both trees: hyp is the tree's default hyperparameter yaml, suffix its
    checkpoint suffix, launcher the command that starts several processes (torchrun, mpirun)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", default="train", choices=("train", "KD"), help="plain training or FGD distillation")
    p.add_argument("--cfg", default="", help=f"model yaml (a name from yolocore/models or a path); default: the "
                   f"--weights model, or {DEFAULT_CFG}")
    p.add_argument("--weights", default="", help="initial weights (either tree's or ultralytics' checkpoint), or empty")
    p.add_argument("--teacher", default="", help="--mode KD: teacher checkpoint (either tree's or ultralytics')")
    p.add_argument("--kd-layers", type=int, nargs="+", default=[17, 20, 23], help="layers to distil")
    p.add_argument("--data", default="", help="dataset yaml; empty = the built-in synthetic dataset")
    p.add_argument("--hyp", default=str(hyp), help="hyperparameter yaml")
    p.add_argument("--epochs", type=positive_int, default=100)
    p.add_argument("--batch-size", type=positive_int, default=16, help="global batch, shared by all processes")
    p.add_argument("--imgsz", type=positive_int, default=640, help="train and val image size (pixels)")
    p.add_argument("--device", default="", help=f"cuda device, i.e. 0 or cpu ({launcher}: one GPU per process)")
    p.add_argument("--workers", type=non_negative_int, default=8, help="data-loading processes")
    p.add_argument("--cache", nargs="?", const="ram", default="", choices=("ram", "disk"),
                   help="decode and resize the images once, into a file beside the labels that every process "
                   "memory-maps (ram and disk alike)")
    p.add_argument("--project", default="runs/train")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true", help="reuse an existing project/name folder")
    p.add_argument("--resume", nargs="?", const="last", default="",
                   help=f"continue a run: its last{suffix}, its folder, or nothing for the newest run")
    p.add_argument("--patience", type=non_negative_int, default=100,
                   help="stop after this many epochs without improvement (0: never)")
    p.add_argument("--noval", action="store_true", help="validate only after the final epoch")
    p.add_argument("--val-period", type=positive_int, default=1, metavar="N",
                   help="validate and checkpoint every N epochs and after the final one (on a GPU, validating 130 "
                        "images can take longer than an epoch's training)")
    p.add_argument("--cos-lr", action="store_true", help="cosine learning-rate schedule")
    p.add_argument("--noautoanchor", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--perturb", type=fraction, default=0.0, metavar="SCALE",
                   help="calibration run: starting weights x (1 + SCALE N(0, 1)); 1e-7 is float32 rounding")
    p.add_argument("--sync-bn", action="store_true", help=f"BatchNorm statistics over all processes ({launcher})")
    p.add_argument("--deterministic", action="store_true", help=deterministic_help)
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--noamp", action="store_true", help=NOAMP_HELP)
    precision.add_argument("--amp", action="store_true", help=AMP_HELP)
    opt = p.parse_args(argv)
    if opt.mode == "KD" and not opt.teacher and not opt.resume:
        p.error("--mode KD needs --teacher CKPT")
    return opt


def parse_val_options(argv, description):
    """val.py's options (the same in both trees): a checkpoint evaluated on a dataset split. description is the
    tree's script docstring."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="checkpoint to evaluate (either tree's or ultralytics')")
    p.add_argument("--data", required=True, help="dataset yaml")
    p.add_argument("--task", default="val", choices=("train", "val", "test"), help="which split to evaluate")
    p.add_argument("--imgsz", type=positive_int, default=640)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--conf-thres", type=fraction, default=0.001)
    p.add_argument("--iou-thres", type=fraction, default=0.6)
    p.add_argument("--max-det", type=positive_int, default=300)
    p.add_argument("--device", default="")
    p.add_argument("--workers", type=non_negative_int, default=8)
    p.add_argument("--project", default="runs/val")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true")
    p.add_argument("--save-json", action="store_true",
                   help="also evaluate as COCO does (pycocotools: AP, AP50, AP75, AP small/medium/large, AR) "
                   "and write annotations.json, predictions.json and coco.csv")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--noamp", action="store_true", help=NOAMP_HELP)
    precision.add_argument("--amp", action="store_true", help=AMP_HELP)
    return p.parse_args(argv)


def parse_detect_options(argv, description):
    """detect.py's options (the same in both trees): a checkpoint run on images. description is the tree's script
    docstring."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="checkpoint (either tree's or ultralytics')")
    p.add_argument("--source", required=True, help="an image, a folder of images, or a .txt list of images")
    p.add_argument("--imgsz", type=positive_int, default=640)
    p.add_argument("--conf-thres", type=fraction, default=0.25)
    p.add_argument("--iou-thres", type=fraction, default=0.45)
    p.add_argument("--max-det", type=positive_int, default=1000)
    p.add_argument("--device", default="")
    p.add_argument("--save-txt", action="store_true", help="also write labels/NAME.txt: class cx cy w h")
    p.add_argument("--save-conf", action="store_true", help="with --save-txt, add the confidence column")
    p.add_argument("--project", default="runs/detect")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true")
    return p.parse_args(argv)


def parse_visualize_options(argv, description):
    """visualize.py's options (the same in both trees): what FGD attends to, teacher and student side by side.
    description is the tree's script docstring."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="teacher checkpoint (.pt or .pkl: either tree's)")
    p.add_argument("--student", required=True, help="student checkpoint (.pt or .pkl), a KD run's or a plain one")
    p.add_argument("--source", required=True, help="an image, a folder of images, or a .txt list of images")
    p.add_argument("--layers", type=int, nargs="+", default=None,
                   help="layer indices to show (default: the student's kd_layers, else 17 20 23)")
    p.add_argument("--imgsz", type=positive_int, default=640)
    p.add_argument("--conf-thres", type=fraction, default=0.25)
    p.add_argument("--iou-thres", type=fraction, default=0.45)
    p.add_argument("--device", default="")
    p.add_argument("--project", default="runs/visualize")
    p.add_argument("--name", default="exp", help="output folder project/name, incremented unless --exist-ok")
    p.add_argument("--exist-ok", action="store_true")
    return p.parse_args(argv)


def parse_convert_options(argv, description, suffix):
    """convert.py's options (the same in both trees); suffix is the tree's checkpoint suffix."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="checkpoint to convert (either tree's or ultralytics')")
    p.add_argument("--out", default="", help=f"output path; default: --weights with the suffix {suffix}")
    return p.parse_args(argv)


def parse_export_options(argv, description):
    """export.py's options (the same in both trees): a checkpoint written as ONNX beside it. description is the
    tree's script docstring."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="checkpoint to export (either tree's or ultralytics')")
    p.add_argument("--include", nargs="+", default=["onnx"], choices=("onnx",), help="formats to write")
    p.add_argument("--imgsz", type=positive_int, default=640, help="image size of the graph (a multiple of the stride)")
    p.add_argument("--dynamic", action="store_true", help="any batch size and image shape, not only 1x3xIMGSZxIMGSZ")
    p.add_argument("--half", action="store_true", help="float16 weights and images")
    p.add_argument("--device", default="", help="where the model is traced: cuda device, i.e. 0, or cpu")
    opt = p.parse_args(argv)
    if opt.half and opt.dynamic:
        # A --dynamic graph computes Detect's grids from the input's shape, and ONNX's Range has no float16.
        p.error("--half and --dynamic do not go together (as in ultralytics' export): choose one")
    return opt
