"""Data loading: augmented training items per second (mosaic, perspective, HSV, flips; the recipe's hyp) read from
the image files and from the image cache of train.py --cache, in one process. Prints figures only:

    python benchmarks/bench_data.py --data datasets/NWPU/NWPU.yaml --imgsz 320 [--items 320]

A training step needs batch-size items; with N workers each worker makes batch-size / N of them per step. The
cache file is written beside the dataset's labels (as train.py --cache does) and kept for later runs.
"""
import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolocore.config import ROOT, load_data_yaml, load_hyp
from yolocore.data.dataset import YoloDataset


def items_per_second(dataset, n):
    start = time.perf_counter()
    for i in range(n):
        dataset[i % len(dataset)]
    return n / (time.perf_counter() - start)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset yaml")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--items", type=int, default=320, help="items timed per variant")
    p.add_argument("--hyp", default=str(ROOT / "YOLOv5Pytorch" / "hyp.scratch-low.yaml"))
    opt = p.parse_args(argv)
    data, hyp = load_data_yaml(opt.data), load_hyp(opt.hyp)
    variants = {"image files": False, "image cache (--cache)": True}
    datasets = {name: YoloDataset(data["train"], opt.imgsz, augment=True, hyp=hyp, nc=data["nc"], cache_images=c)
                for name, c in variants.items()}
    rates = {}
    for name, dataset in datasets.items():
        items_per_second(dataset, 8)  # the page cache and the allocator warm up
        rates[name] = items_per_second(dataset, opt.items)
        print(f"{name:>22}: {rates[name]:6.1f} items/s ({1000 / rates[name]:.1f} ms an item), imgsz {opt.imgsz}")
    files, cached = rates.values()
    print(f"the cache makes {cached / files:.1f}x the items per second")


if __name__ == "__main__":
    main()
