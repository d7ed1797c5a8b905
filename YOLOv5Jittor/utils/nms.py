"""Non-maximum suppression in plain jittor ops, the same greedy algorithm as the PyTorch tree."""
import jittor as jt

from yolocore.evaluation.boxes import NMS_BLOCK_CPU, NMS_BLOCK_GPU, greedy_keep, xywh2xyxy

MAX_WH = 7680  # class offset larger than any image side, so boxes of different classes never overlap


def box_iou(box1, box2, eps=1e-7):
    lt = jt.maximum(box1[:, None, :2], box2[None, :, :2])
    rb = jt.minimum(box1[:, None, 2:], box2[None, :, 2:])
    inter = (rb - lt).clamp(min_v=0).prod(2)
    area1 = (box1[:, 2] - box1[:, 0]) * (box1[:, 3] - box1[:, 1])
    area2 = (box2[:, 2] - box2[:, 0]) * (box2[:, 3] - box2[:, 1])
    return inter / (area1[:, None] + area2[None, :] - inter + eps)


def nms(boxes, scores, iou_thres, max_det):
    """Greedy NMS; indices of kept boxes, best first, at most max_det. Score-sorted boxes go in blocks: the
    IoU matrix of a block is computed at once on the device and scanned on the host
    (yolocore.evaluation.boxes.greedy_keep), a few transfers per block instead of one device round trip per kept box."""
    block = NMS_BLOCK_GPU if jt.flags.use_cuda else NMS_BLOCK_CPU
    order, _ = scores.argsort(descending=True)
    keep = order[:0]
    for start in range(0, order.numel(), block):
        idx = order[start:start + block]
        b = boxes[idx]
        suppressed = (box_iou(boxes[keep], b) > iou_thres).any(0)
        chosen = greedy_keep((box_iou(b, b) > iou_thres).numpy(), suppressed.numpy(), max_det - len(keep))
        keep = jt.concat((keep, idx[jt.array(chosen)]))
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
    output = [jt.zeros((0, 6))] * prediction.shape[0]
    for xi, x in enumerate(prediction):
        x = x[x[:, 4] > conf_thres]
        if not x.shape[0]:
            continue
        cls_conf = x[:, 5:] * x[:, 4:5]
        box = xywh2xyxy(x[:, :4])
        if multi_label:
            i, j = jt.nonzero(cls_conf > conf_thres).t()
            x = jt.concat((box[i], cls_conf[i, j, None], j[:, None].float()), 1)
        else:
            j, conf = cls_conf.argmax(1, keepdims=True)
            x = jt.concat((box, conf, j.float()), 1)[conf.view(-1) > conf_thres]
        if classes is not None:
            x = x[(x[:, 5:6] == jt.array(classes)).any(1)]
        if not x.shape[0]:
            continue
        x = x[x[:, 4].argsort(descending=True)[0][:max_nms]]
        offsets = x[:, 5:6] * (0 if agnostic else MAX_WH)
        output[xi] = x[nms(x[:, :4] + offsets, x[:, 4], iou_thres, max_det)]
    return output
