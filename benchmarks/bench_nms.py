"""Time of validation's NMS (conf 0.001, IoU 0.6, multi-label, max_det 300: YOLOv5's val settings) on dense
predictions like an untrained model's, where nearly every anchor passes the confidence threshold: the blocked
NMS of YOLOv5Pytorch.utils.nms against the one-kept-box-per-round loop it replaced, which costs one device
round trip per kept box. Prints figures only; run from the repository root with
`python -m benchmarks.bench_nms [--device cuda]`.
"""
import argparse
import time

import torch

from YOLOv5Pytorch.utils import nms

ANCHORS_512 = 3 * (64 * 64 + 32 * 32 + 16 * 16)  # yolov5 outputs per 512x512 image


def loop_nms(boxes, scores, iou_thres, max_det):
    order = scores.argsort(descending=True)
    keep = []
    while order.numel() and len(keep) < max_det:
        i = order[0]
        keep.append(i)
        iou = nms.box_iou(boxes[i][None], boxes[order[1:]])[0]
        order = order[1:][iou <= iou_thres]
    return torch.stack(keep) if keep else torch.zeros(0, dtype=torch.long, device=boxes.device)


def dense_predictions(batch, nc, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, ANCHORS_512, 2, generator=g) * 512
    wh = torch.rand(batch, ANCHORS_512, 2, generator=g) * 120 + 8
    obj = torch.rand(batch, ANCHORS_512, 1, generator=g) * 0.05
    cls = torch.rand(batch, ANCHORS_512, nc, generator=g)
    return torch.cat((xy, wh, obj, cls), 2).to(device)


def timed(fn, device, repeats):
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats, out


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--nc", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    device = torch.device(args.device)
    pred = dense_predictions(args.batch, args.nc, device)
    kwargs = dict(conf_thres=0.001, iou_thres=0.6, multi_label=True, max_det=300)
    blocked_s, blocked = timed(lambda: nms.non_max_suppression(pred, **kwargs), device, args.repeats)
    replaced = nms.nms
    nms.nms = loop_nms
    try:
        loop_s, looped = timed(lambda: nms.non_max_suppression(pred, **kwargs), device, args.repeats)
    finally:
        nms.nms = replaced
    same = all(torch.equal(a, b) for a, b in zip(blocked, looped))
    print(f"{args.batch} images of {ANCHORS_512} predictions, {args.nc} classes, on {device}; "
          f"{sum(len(d) for d in blocked)} boxes kept; same boxes as the loop: {same}")
    print(f"  blocked NMS       {1000 * blocked_s / args.batch:8.1f} ms/image")
    print(f"  one box per round {1000 * loop_s / args.batch:8.1f} ms/image  ({loop_s / blocked_s:.1f}x slower)")


if __name__ == "__main__":
    main()
