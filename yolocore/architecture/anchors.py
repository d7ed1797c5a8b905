"""AutoAnchor: check that the anchors fit the dataset's boxes and evolve better ones when they do not."""
import numpy as np

BPR_OK = 0.98  # best possible recall below which YOLOv5 recomputes anchors


def label_wh(shapes, labels, imgsz, rng):
    """Box sizes in pixels at training scale, with YOLOv5's +-10% scale jitter; tiny boxes dropped."""
    shapes = imgsz * shapes / shapes.max(1, keepdims=True)
    scale = rng.uniform(0.9, 1.1, size=(shapes.shape[0], 1))
    wh = np.concatenate([lb[:, 3:5] * s for s, lb in zip(shapes * scale, labels)]) if len(labels) else np.zeros((0, 2))
    return wh[(wh >= 2.0).all(1)].astype(np.float64)


def anchor_fit(wh, anchors, thr):
    """(best possible recall, anchors above threshold per box) for (n, 2) sizes against (k, 2) anchors."""
    r = wh[:, None] / anchors[None]
    x = np.minimum(r, 1 / r).min(2)
    return float((x.max(1) > 1 / thr).mean()), float((x > 1 / thr).sum(1).mean())


def kmean_anchors(wh, n, thr, rng, gen=1000):
    """k-means on whitened sizes, then YOLOv5's mutation search on the mean best-match fitness."""
    def fitness(k):
        r = wh[:, None] / k[None]
        x = np.minimum(r, 1 / r).min(2).max(1)
        return (x * (x > 1 / thr)).mean()

    std = wh.std(0) + 1e-9
    points = wh / std
    k = points[rng.choice(len(points), n, replace=len(points) < n)]
    for _ in range(30):
        assign = ((points[:, None] - k[None]) ** 2).sum(2).argmin(1)
        k = np.stack([points[assign == j].mean(0) if (assign == j).any() else k[j] for j in range(n)])
    k = k * std
    best = fitness(k)
    for _ in range(gen):
        v = np.ones_like(k)
        while (v == 1).all():
            v = ((rng.random(k.shape) < 0.9) * rng.random() * rng.standard_normal(k.shape) * 0.1 + 1).clip(0.3, 3.0)
        candidate = (k * v).clip(min=2.0)
        f = fitness(candidate)
        if f > best:
            best, k = f, candidate
    return k[np.argsort(k.prod(1))]


def check_anchors(wh, anchors, thr=4.0, rng=None):
    """anchors: (k, 2) pixels, smallest level first. Returns (bpr, new anchors or None when they already fit
    or evolution finds nothing better)."""
    bpr, _ = anchor_fit(wh, anchors, thr)
    if bpr > BPR_OK or len(wh) < len(anchors):
        return bpr, None
    new = kmean_anchors(wh, len(anchors), thr, rng or np.random.default_rng(0))
    new_bpr, _ = anchor_fit(wh, new, thr)
    return (new_bpr, new) if new_bpr > bpr else (bpr, None)


def evolved_anchors(anchors, dataset, thr, imgsz, seed):
    """train.py's AutoAnchor: anchors (k, 2) in pixels against the training set's boxes. Returns better anchors
    (k, 2), or None where the current ones fit or evolution finds none better; prints which."""
    wh = label_wh(dataset.shapes, dataset.labels, imgsz, np.random.default_rng(seed))
    bpr, new = check_anchors(wh, anchors, thr, np.random.default_rng(seed))
    if new is None:
        print(f"AutoAnchor: best possible recall {bpr:.3f} with the current anchors")
    else:
        print(f"AutoAnchor: new anchors with best possible recall {bpr:.3f}")
    return new
