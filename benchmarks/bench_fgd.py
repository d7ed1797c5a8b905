"""Forward+backward time of FGDLoss against the official-style loss: a Python loop over images and boxes builds
the masks, and the terms follow mmdet FeatureLoss's arithmetic on batched tensors (both GcBlocks' output maps, the
weighted squared error built map by map). FGDLoss builds the masks by broadcasting and reads the maps fewer times.

Setting of the issue: batch 16, imgsz 512, strides 8/16/32, yolov5n neck channels as student, yolov5s as teacher,
5 and 50 boxes per image. Prints figures only; run from the repository root with
`python -m benchmarks.bench_fgd [--device cuda]`.
"""
import argparse
import time

import torch

from YOLOv5Pytorch.KD.fgd import FGDLoss, attention, background_mask, foreground_mask, pad_boxes

STUDENT_CHANNELS = [64, 128, 256]
TEACHER_CHANNELS = [128, 256, 512]
STRIDES = [8, 16, 32]


def loop_masks(targets, batch, h, w):
    fg = torch.zeros(batch, h, w, device=targets.device)
    bg = torch.ones(batch, h, w, device=targets.device)
    for i in range(batch):
        for row in targets[targets[:, 0] == i]:
            cx, cy, bw, bh = row[2], row[3], row[4], row[5]
            wmin = int(((cx - bw / 2) * w).clamp(0, w).floor())
            wmax = int(((cx + bw / 2) * w).clamp(0, w).ceil())
            hmin = int(((cy - bh / 2) * h).clamp(0, h).floor())
            hmax = int(((cy + bh / 2) * h).clamp(0, h).ceil())
            area = 1.0 / ((hmax + 1 - hmin) * (wmax + 1 - wmin))
            cells = fg[i, hmin : hmax + 1, wmin : wmax + 1]
            fg[i, hmin : hmax + 1, wmin : wmax + 1] = torch.clamp(cells, min=area)
        bg[i] = torch.where(fg[i] > 0, 0.0, 1.0)
        if bg[i].sum():
            bg[i] /= bg[i].sum()
    return fg, bg


def loop_loss(fgd, student_feats, teacher_feats, targets):
    total = 0.0
    for level, (student, teacher) in enumerate(zip(student_feats, teacher_feats)):
        student, teacher = fgd.align[level](student), teacher.detach()
        n, _, h, w = teacher.shape
        fg, bg = loop_masks(targets, n, h, w)
        spatial_t, channel_t = attention(teacher, fgd.temp)
        spatial_s, channel_s = attention(student, fgd.temp)
        error = ((teacher - student).pow(2) * channel_t[:, :, None, None]).sum(1) * spatial_t
        mask_loss = (channel_s - channel_t).abs().sum() + (spatial_s - spatial_t).abs().sum()
        relation = (fgd.gc_student[level](student) - fgd.gc_teacher[level](teacher)).pow(2).sum()
        total = total + (
            fgd.alpha[level] * (error * fg).sum()
            + fgd.beta[level] * (error * bg).sum()
            + fgd.gamma[level] * mask_loss
            + fgd.lambda_[level] * relation
        ) / n
    return total


def make_inputs(batch, imgsz, boxes_per_image, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    student = [
        torch.randn(batch, c, imgsz // s, imgsz // s, generator=gen).to(device).requires_grad_()
        for c, s in zip(STUDENT_CHANNELS, STRIDES)
    ]
    teacher = [
        torch.randn(batch, c, imgsz // s, imgsz // s, generator=gen).to(device)
        for c, s in zip(TEACHER_CHANNELS, STRIDES)
    ]
    n = batch * boxes_per_image
    wh = 0.02 + 0.3 * torch.rand(n, 2, generator=gen)
    centre = wh / 2 + (1 - wh) * torch.rand(n, 2, generator=gen)
    image = torch.arange(batch).repeat_interleave(boxes_per_image)[:, None].float()
    cls = torch.randint(0, 80, (n, 1), generator=gen).float()
    return student, teacher, torch.cat([image, cls, centre, wh], 1).to(device)


def vectorised_step(fgd, student, teacher, targets):
    fgd(student, teacher, targets)[0].backward()


def loop_step(fgd, student, teacher, targets):
    loop_loss(fgd, student, teacher, targets).backward()


def vectorised_masks(targets, batch, imgsz):
    boxes, valid = pad_boxes(targets, batch)
    for s in STRIDES:
        background_mask(foreground_mask(boxes, valid, imgsz // s, imgsz // s))


def looped_masks(targets, batch, imgsz):
    for s in STRIDES:
        loop_masks(targets, batch, imgsz // s, imgsz // s)


def seconds(device, repeats, fn, *args):
    """Median wall time of fn(*args) over repeats calls, after one warm-up call for allocators and kernels."""
    times = []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(*args)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[repeats // 2]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--imgsz", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    fgd = FGDLoss(STUDENT_CHANNELS, TEACHER_CHANNELS).to(device)
    threads = f", {torch.get_num_threads()} CPU threads" if device.type == "cpu" else ""
    print(f"FGDLoss forward+backward on {device}{threads}, batch {args.batch}, imgsz {args.imgsz}, "
          f"median of {args.repeats}")
    print(f"{'boxes/img':>9} {'vectorised ms':>14} {'loop ms':>10} {'speed-up':>9} {'masks only: speed-up':>21}")
    for boxes_per_image in (5, 50):
        inputs = make_inputs(args.batch, args.imgsz, boxes_per_image, device)
        vectorised_loss, loop_value = fgd(*inputs)[0].item(), loop_loss(fgd, *inputs).item()
        if abs(vectorised_loss - loop_value) > 1e-4 * abs(loop_value):
            print(f"warning: losses differ, vectorised {vectorised_loss} loop {loop_value}")
        fast = seconds(device, args.repeats, vectorised_step, fgd, *inputs)
        slow = seconds(device, args.repeats, loop_step, fgd, *inputs)
        mask_args = (inputs[2], args.batch, args.imgsz)
        fast_masks = seconds(device, args.repeats, vectorised_masks, *mask_args)
        slow_masks = seconds(device, args.repeats, looped_masks, *mask_args)
        print(f"{boxes_per_image:>9} {fast * 1e3:>14.1f} {slow * 1e3:>10.1f} {slow / fast:>8.1f}x "
              f"{slow_masks / fast_masks:>20.1f}x ({fast_masks * 1e3:.1f} vs {slow_masks * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
