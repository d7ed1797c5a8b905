"""Non-maximum suppression in plain torch: torchvision's compiled ops do not load with the CPU torch used here."""
import torch

from yolocore.evaluation.boxes import NMS_BLOCK_CPU, NMS_BLOCK_GPU, greedy_keep, xywh2xyxy

MAX_WH = 7680  # class offset larger than any image side, so boxes of different classes never overlap


def box_iou(box1, box2, eps=1e-7):
    lt = torch.maximum(box1[:, None, :2], box2[None, :, :2])
    rb = torch.minimum(box1[:, None, 2:], box2[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(2)
    area1 = (box1[:, 2] - box1[:, 0]) * (box1[:, 3] - box1[:, 1])
    area2 = (box2[:, 2] - box2[:, 0]) * (box2[:, 3] - box2[:, 1])
    return inter / (area1[:, None] + area2[None, :] - inter + eps)


def nms(boxes, scores, iou_thres, max_det):
    """Greedy NMS; indices of kept boxes, best first, at most max_det. Score-sorted boxes go in blocks: the
    IoU matrix of a block is computed at once on the device and scanned on the host
    (yolocore.evaluation.boxes.greedy_keep), a few transfers per block instead of one device round trip per kept box."""
    block = NMS_BLOCK_CPU if boxes.device.type == "cpu" else NMS_BLOCK_GPU
    order = scores.argsort(descending=True)
    keep = order[:0]
    for start in range(0, order.numel(), block):
        idx = order[start:start + block]
        b = boxes[idx]
        suppressed = (box_iou(boxes[keep], b) > iou_thres).any(0)
        chosen = greedy_keep((box_iou(b, b) > iou_thres).cpu().numpy(), suppressed.cpu().numpy(), max_det - len(keep))
        keep = torch.cat((keep, idx[torch.from_numpy(chosen).to(idx.device)]))
        if len(keep) == max_det:
            break
    return keep


def non_max_suppression(prediction, conf_thres=0.25, iou_thres=0.45, classes=None, agnostic=False,
                        multi_label=False, max_det=300, max_nms=30000):
    """prediction: (bs, n, 5 + nc) decoded [cx, cy, w, h, obj, cls...]. Returns per image (k, 6)
    [x1, y1, x2, y2, conf, cls], batched over classes by offsetting boxes by class * MAX_WH."""
    if not 0 <= conf_thres <= 1 or not 0 <= iou_thres <= 1:
        raise ValueError(f"conf_thres {conf_thres} and iou_thres {iou_thres} must lie in [0, 1]")
    nc = prediction.shape[2] - 5
    multi_label &= nc > 1
    output = [torch.zeros((0, 6), device=prediction.device)] * prediction.shape[0]
    for xi, x in enumerate(prediction):
        x = x[x[:, 4] > conf_thres]
        if not x.shape[0]:
            continue
        cls_conf = x[:, 5:] * x[:, 4:5]
        box = xywh2xyxy(x[:, :4])
        if multi_label:
            i, j = (cls_conf > conf_thres).nonzero(as_tuple=False).T
            x = torch.cat((box[i], cls_conf[i, j, None], j[:, None].float()), 1)
        else:
            conf, j = cls_conf.max(1, keepdim=True)
            x = torch.cat((box, conf, j.float()), 1)[conf.view(-1) > conf_thres]
        if classes is not None:
            x = x[(x[:, 5:6] == torch.tensor(classes, device=x.device)).any(1)]
        if not x.shape[0]:
            continue
        x = x[x[:, 4].argsort(descending=True)[:max_nms]]
        offsets = x[:, 5:6] * (0 if agnostic else MAX_WH)
        output[xi] = x[nms(x[:, :4] + offsets, x[:, 4], iou_thres, max_det)]
    return output
