"""Check data/transform_nwpu.py on the real NWPU VHR-10 (not a unit test: it needs the dataset).

    python data/check_nwpu.py ["../shared/NWPU VHR-10 dataset"]

Converts into a temporary folder (printing the converter's per-split and per-class summary), reads the result
back with the project's dataset reader, and compares the stratified split with a plain random one over
several seeds. Exits non-zero if the conversion fails or the labels read back differ from the ground truth.
"""
import sys
import tempfile
from pathlib import Path

import numpy as np
import transform_nwpu as nwpu

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SRC = ROOT.parent / "shared" / "NWPU VHR-10 dataset"
SEEDS = range(10)


def compare_splits(counts, val_ratio=0.2):
    """Per-seed largest gap between a class's val share of boxes and the val share of images."""
    n_val = nwpu.val_size(len(counts), val_ratio)
    print(f"\nlargest per-class gap between val share of boxes and {n_val / len(counts):.1%} of images in val:")
    print(f"{'seed':>4}{'random':>10}{'stratified':>12}")
    gaps = []
    for seed in SEEDS:
        plain = nwpu.random_split(len(counts), n_val, np.random.default_rng(seed))
        strat = nwpu.stratified_split(counts, n_val, np.random.default_rng(seed))
        gaps.append((nwpu.val_share_deviation(counts, plain), nwpu.val_share_deviation(counts, strat)))
        print(f"{seed:>4}{gaps[-1][0]:>10.1%}{gaps[-1][1]:>12.1%}")
    mean, worst = np.mean(gaps, axis=0), np.max(gaps, axis=0)
    print(f"{'mean':>4}{mean[0]:>10.1%}{mean[1]:>12.1%}\n{'max':>4}{worst[0]:>10.1%}{worst[1]:>12.1%}")


def main(argv):
    src = Path(argv[0]) if argv else DEFAULT_SRC
    sys.path.insert(0, str(ROOT))  # run as a script, only data/ is on the path
    from yolocore.config import load_data_yaml
    from yolocore.data.dataset import YoloDataset

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "NWPU"
        status = nwpu.main([str(src), "--out", str(out)])
        if status:
            return status
        positives, _, _, _ = nwpu.collect(src.resolve(), negatives=False)
        expected = nwpu.class_counts(positives).sum(0)
        data = load_data_yaml(out / "NWPU.yaml")
        print("\nread back with yolocore.data.dataset.YoloDataset:")
        read = np.zeros(data["nc"], dtype=np.int64)
        for split in ("train", "val"):
            ds = YoloDataset(data[split], imgsz=640, nc=data["nc"], cache=False, prefix=f"{split}: ")
            for labels in ds.labels:
                read += np.bincount(labels[:, 0].astype(np.int64), minlength=data["nc"])
    print(f"{'class':<20}{'ground truth':>13}{'read back':>11}")
    for name, e, r in zip(data["names"], expected, read):
        print(f"{name:<20}{e:>13}{r:>11}")
    compare_splits(nwpu.class_counts(positives))
    if not np.array_equal(expected, read):
        print("MISMATCH between ground truth and the labels read back", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
