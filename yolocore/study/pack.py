"""A study's results in a few flat files, small enough to come back from a machine that returns at most 8 files of
16 MiB each, none more than two folders down (the GPU machine's $OUT: docs/study.md):

    python -m yolocore.study.pack runs/study/gpu OUT_DIR

OUT_DIR/study.md is the report; study.tar.gz the whole study folder (results.csv, plots, per-class and COCO tables,
study.json, logs, TensorBoard files) but its checkpoints; weights-1.tar, ... each run's best weights as
PROJECT/RUN/weights/best.pkl, stripped to their EMA weights in float16 without the optimizer (4 MB for yolov5n, 14 MB
for yolov5s), which both trees' val.py, detect.py and --teacher read. Untarred in one folder, they give back the
study's folder with best weights; `python -m yolocore.study.report` then reports it again.
"""
import argparse
import io
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np

from yolocore.study.report import STUDY_JSON
from yolocore.training.checkpoints import SUFFIXES, map_arrays, network_weights, read_checkpoint

PART_BYTES = 15 * 2 ** 20  # each weights tar stays under the 16 MiB a returned file may have


def half(a):
    return a.astype(np.float16) if a.dtype == np.float32 else a


def stripped(path):
    """Checkpoint bytes: the weights a run is evaluated with (EMA), in float16, with its record, names and options."""
    ckpt = read_checkpoint(path)
    keep = {k: v for k, v in ckpt.items() if k not in ("model", "ema", "optimizer")}
    keep.update(model=map_arrays(network_weights(ckpt), half), ema=None, optimizer=None, packed_from=str(path))
    return pickle.dumps(keep, protocol=4)


def best_weights(project):
    """(run folder name, its best checkpoint) of every run of the study, in folder order."""
    found = []
    for run in sorted(p for p in Path(project).iterdir() if (p / "weights").is_dir()):
        found += [(run.name, f) for f in (run / "weights" / f"best{s}" for s in SUFFIXES.values()) if f.is_file()]
    return found


def add_bytes(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def pack(project, out):
    """Writes study.md, study.tar.gz and weights-N.tar into out; returns their paths."""
    project, out = Path(project), Path(out)
    if not (project / STUDY_JSON).is_file():
        raise FileNotFoundError(f"{project}: no {STUDY_JSON}, not a study folder")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if (project / "study.md").is_file():
        written.append(Path(shutil.copy(project / "study.md", out / "study.md")))
    root = project.name
    with tarfile.open(out / "study.tar.gz", "w:gz") as tar:
        tar.add(project, arcname=root, filter=lambda info: None if "/weights/" in f"/{info.name}/" else info)
    written.append(out / "study.tar.gz")
    parts, size = [], PART_BYTES
    for run, path in best_weights(project):
        data = stripped(path)
        if size + len(data) > PART_BYTES:  # a new part (one checkpoint over the limit still gets a part of its own)
            parts.append(tarfile.open(out / f"weights-{len(parts) + 1}.tar", "w"))
            size = 0
        add_bytes(parts[-1], f"{root}/{run}/weights/best.pkl", data)
        size += len(data)
    for tar in parts:
        tar.close()
        written.append(Path(tar.name))
    return written


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("project", help="the study's folder (study.py --project)")
    p.add_argument("out", help="folder to write the packed files into")
    opt = p.parse_args(argv)
    for f in pack(opt.project, opt.out):
        print(f"{f} ({f.stat().st_size / 2 ** 20:.1f} MiB)")


if __name__ == "__main__":
    main()
