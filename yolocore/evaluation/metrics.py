"""Detection metrics in numpy, numerically identical to ultralytics YOLOv5 (v6/v7) utils/metrics.py and val.py.

Both framework trees feed numpy arrays here, so PyTorch and Jittor runs report the same mAP for the same predictions.
"""
from pathlib import Path

import numpy as np

from yolocore.evaluation.boxes import box_iou


def fitness(x):
    """Model selection score: 0.1 * mAP50 + 0.9 * mAP50-95 of rows [P, R, mAP50, mAP50-95, ...]."""
    w = np.array([0.0, 0.0, 0.1, 0.9])
    return (np.asarray(x, dtype=np.float64)[:, :4] * w).sum(1)


def smooth(y, f=0.05):
    """Box filter of fraction f, edge-padded so the output has the input's length."""
    nf = round(len(y) * f * 2) // 2 + 1  # odd number of taps
    pad = np.ones(nf // 2)
    yp = np.concatenate((pad * y[0], y, pad * y[-1]), 0)
    return np.convolve(yp, np.ones(nf) / nf, mode='valid')


def compute_ap(recall, precision):
    """AP of one class at one IoU threshold from cumulative recall/precision sorted by falling confidence.

    101-point interpolation integrated with the trapezoid rule, exactly as ultralytics method='interp'. The
    (recall 1, precision 0) sentinel is why a perfect detector scores 0.995 rather than 1, as in published YOLOv5
    numbers; keeping it keeps our mAP comparable with theirs.
    """
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))  # precision envelope
    x = np.linspace(0, 1, 101)
    y = np.interp(x, mrec, mpre)
    ap = float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)
    return ap, mpre, mrec


def _class_names(names, classes):
    """Names of the given class ids; names may be a list or an {id: name} dict, missing ids fall back to the id."""
    lookup = names if isinstance(names, dict) else dict(enumerate(names))
    return [str(lookup.get(int(c), int(c))) for c in classes]


def ap_per_class(tp, conf, pred_cls, target_cls, plot=False, save_dir='.', names=(), eps=1e-16, prefix=''):
    """Per-class AP at each IoU threshold, plus P/R/F1 at the confidence maximising the mean F1 over classes.

    tp (n, t) bool, conf (n,), pred_cls (n,), target_cls (m,).
    Returns tp, fp, p, r, f1 (each (nc,)), ap (nc, t) and the class ids present in target_cls (nc,).
    """
    tp = np.asarray(tp, dtype=np.float64)
    conf, pred_cls, target_cls = (np.asarray(a).reshape(-1) for a in (conf, pred_cls, target_cls))
    order = np.argsort(-conf, kind='stable')  # stable: tied scores rank the same on every platform
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]

    unique_classes, nt = np.unique(target_cls, return_counts=True)
    nc = unique_classes.shape[0]
    px = np.linspace(0, 1, 1000)  # confidence axis for the P/R/F1 curves, recall axis for the PR curve
    py = np.zeros((nc, px.size))
    ap, p, r = np.zeros((nc, tp.shape[1])), np.zeros((nc, px.size)), np.zeros((nc, px.size))
    for ci, c in enumerate(unique_classes):
        i = pred_cls == c
        if not i.any():
            continue
        tpc = tp[i].cumsum(0)
        fpc = (1 - tp[i]).cumsum(0)
        recall = tpc / (nt[ci] + eps)
        precision = tpc / (tpc + fpc)
        # Curves are sampled against -conf because np.interp needs increasing x and confidence falls along the list
        r[ci] = np.interp(-px, -conf[i], recall[:, 0], left=0)
        p[ci] = np.interp(-px, -conf[i], precision[:, 0], left=1)
        for j in range(tp.shape[1]):
            ap[ci, j], mpre, mrec = compute_ap(recall[:, j], precision[:, j])
            if j == 0:
                py[ci] = np.interp(px, mrec, mpre)

    f1 = 2 * p * r / (p + r + eps)
    if plot and nc:
        from yolocore.plots import detection as plots  # deferred: matplotlib is slow to import, needed only here

        present = _class_names(names, unique_classes) if len(names) else []
        save_dir = Path(save_dir)
        plots.plot_pr_curve(px, py, ap, save_dir / f'{prefix}PR_curve.png', present)
        plots.plot_mc_curve(px, f1, save_dir / f'{prefix}F1_curve.png', present, ylabel='F1')
        plots.plot_mc_curve(px, p, save_dir / f'{prefix}P_curve.png', present, ylabel='Precision')
        plots.plot_mc_curve(px, r, save_dir / f'{prefix}R_curve.png', present, ylabel='Recall')

    i = smooth(f1.mean(0), 0.1).argmax() if nc else 0
    p, r, f1 = p[:, i], r[:, i], f1[:, i]
    tp = (r * nt).round()
    fp = (tp / (p + eps) - tp).round()
    return tp, fp, p, r, f1, ap, unique_classes.astype(int)


def _best_per(matches, key):
    """Keep, for each value of column key, the match with the highest IoU; rows come back sorted by that value.

    matches (k, 3) [label, detection, iou]; the sort mirrors YOLOv5 so ties resolve the same way.
    """
    matches = matches[matches[:, 2].argsort()[::-1]]
    return matches[np.unique(matches[:, key], return_index=True)[1]]


def _match_table(iou, mask):
    """Rows [label, detection, iou] for every pair allowed by mask."""
    li, di = np.nonzero(mask)
    return np.stack((li, di, iou[li, di]), 1).astype(np.float64)


def match_predictions(detections, labels, iouv):
    """Which detections are true positives at each IoU threshold (YOLOv5 val.py process_batch).

    detections (n, 6) [x1, y1, x2, y2, conf, cls], labels (m, 5) [cls, x1, y1, x2, y2], iouv (t,)
    -> correct (n, t) bool.
    """
    detections, labels = np.asarray(detections, np.float64), np.asarray(labels, np.float64)
    iouv = np.asarray(iouv, np.float64).reshape(-1)
    correct = np.zeros((detections.shape[0], iouv.size), dtype=bool)
    if not detections.shape[0] or not labels.shape[0]:
        return correct
    iou = box_iou(labels[:, 1:5], detections[:, :4])
    correct_class = labels[:, 0:1] == detections[:, 5]
    for k, thr in enumerate(iouv):
        matches = _match_table(iou, (iou >= thr) & correct_class)
        if matches.shape[0] > 1:
            # YOLOv5's filter, kept as is so our mAP is theirs: each detection keeps its best label, then each label
            # keeps its first detection in index order, which after NMS is the most confident one (not the best IoU)
            matches = _best_per(matches, 1)
            matches = matches[np.unique(matches[:, 0], return_index=True)[1]]
        correct[matches[:, 1].astype(int), k] = True
    return correct


class ConfusionMatrix:
    """Class confusion over detections above conf, matched to labels by IoU regardless of class (YOLOv5 semantics).

    matrix[predicted, true]; the extra last row/column is background: a missed label counts in the last row, a
    detection matching no label in the last column.
    """

    def __init__(self, nc, conf=0.25, iou_thres=0.45):
        self.matrix = np.zeros((nc + 1, nc + 1))
        self.nc = nc
        self.conf = conf
        self.iou_thres = iou_thres

    def process_batch(self, detections, labels):
        """detections (n, 6) [x1, y1, x2, y2, conf, cls] or None, labels (m, 5) [cls, x1, y1, x2, y2]."""
        labels = np.asarray(labels, np.float64).reshape(-1, 5)
        gt_classes = labels[:, 0].astype(int)
        if detections is None:
            np.add.at(self.matrix, (self.nc, gt_classes), 1)
            return
        detections = np.asarray(detections, np.float64).reshape(-1, 6)
        detections = detections[detections[:, 4] > self.conf]
        detection_classes = detections[:, 5].astype(int)
        iou = box_iou(labels[:, 1:5], detections[:, :4])
        matches = _match_table(iou, iou > self.iou_thres)
        if matches.shape[0] > 1:
            # Unlike val matching, YOLOv5 re-sorts by IoU here, so a label keeps its best-overlapping detection
            matches = _best_per(_best_per(matches, 1), 0)
        m0, m1 = matches[:, 0].astype(int), matches[:, 1].astype(int)
        for i, gc in enumerate(gt_classes):
            j = m0 == i
            if j.sum() == 1:
                self.matrix[detection_classes[m1[j]][0], gc] += 1
            else:
                self.matrix[self.nc, gc] += 1  # missed: background predicted
        # YOLOv5 skipped this when an image had no match at all, losing those false positives; ultralytics 8 fixed it
        for i, dc in enumerate(detection_classes):
            if not (m1 == i).any():
                self.matrix[dc, self.nc] += 1

    def tp_fp(self):
        """True and false positives per class, background excluded."""
        tp = self.matrix.diagonal()
        fp = self.matrix.sum(1) - tp
        return tp[:-1], fp[:-1]

    def plot(self, save_dir, names, normalize=True):
        """Write confusion_matrix.png into save_dir; columns are normalised to sum to 1 when normalize."""
        from yolocore.plots import detection as plots  # deferred: matplotlib is slow to import, needed only here

        return plots.plot_confusion_matrix(self.matrix, names, Path(save_dir) / 'confusion_matrix.png', normalize)
