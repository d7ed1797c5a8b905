"""Non-maximum suppression in plain jittor ops, the same greedy algorithm as the PyTorch tree."""
import jittor as jt

MAX_WH = 7680  # class offset larger than any image side, so boxes of different classes never overlap


def xywh2xyxy(x):
    y = x.clone()
    y[..., 0] = x[..., 0] - x[..., 2] / 2
    y[..., 1] = x[..., 1] - x[..., 3] / 2
    y[..., 2] = x[..., 0] + x[..., 2] / 2
    y[..., 3] = x[..., 1] + x[..., 3] / 2
    return y


def box_iou(box1, box2, eps=1e-7):
    lt = jt.maximum(box1[:, None, :2], box2[None, :, :2])
    rb = jt.minimum(box1[:, None, 2:], box2[None, :, 2:])
    inter = (rb - lt).clamp(min_v=0).prod(2)
    area1 = (box1[:, 2] - box1[:, 0]) * (box1[:, 3] - box1[:, 1])
    area2 = (box2[:, 2] - box2[:, 0]) * (box2[:, 3] - box2[:, 1])
    return inter / (area1[:, None] + area2[None, :] - inter + eps)


def nms(boxes, scores, iou_thres, max_det):
    """Greedy NMS; indices of kept boxes, best first. Stops at max_det kept boxes, so it runs at most
    max_det rounds of one vectorised IoU row each."""
    order, _ = scores.argsort(descending=True)
    keep = []
    while order.numel() and len(keep) < max_det:
        i = order[0]  # shape (1,) in Jittor, so boxes[i] is already a (1, 4) row
        keep.append(i)
        if order.numel() == 1:
            break
        iou = box_iou(boxes[i], boxes[order[1:]])[0]
        order = order[1:][iou <= iou_thres]
    return jt.concat(keep) if keep else jt.zeros(0, dtype=jt.int32)


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
