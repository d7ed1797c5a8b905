"""Rectangular validation batches, as YOLOv5 validates (its val.py, and the validation inside train.py).

Images are ordered by aspect ratio and each batch is letterboxed to the smallest rectangle of stride multiples
that holds its images at imgsz, plus half a stride of margin, instead of to a square: less padding to compute on,
and the same mAP as ultralytics' val.py for the same weights (a square letterbox moves per-class AP50-95 by
several points on NWPU VHR-10).
"""
import numpy as np

PAD = 0.5  # strides of margin around each batch's rectangle, as YOLOv5's validation loader


def rect_batches(shapes, batch_size, imgsz, stride=32, pad=PAD):
    """shapes (n, 2) image (w, h) -> (order, batch_index, batch_shapes): order (n,) the items by rising aspect
    ratio h / w (stable: ties keep their file order on every platform), batch_index (n,) the batch of the i-th item
    of that order, batch_shapes (nb, 2) the letterbox (h, w) of each batch, in pixels."""
    shapes = np.asarray(shapes, dtype=np.float64).reshape(-1, 2)
    aspect = shapes[:, 1] / shapes[:, 0]
    order = np.argsort(aspect, kind="stable")
    aspect = aspect[order]
    batch_index = np.arange(len(order)) // batch_size
    relative = np.ones((-(-len(order) // batch_size), 2))  # (h, w) of the batch over imgsz
    for b in range(len(relative)):
        ar = aspect[batch_index == b]
        if ar.max() < 1:  # every image wider than tall: full width, the height of the tallest
            relative[b] = ar.max(), 1
        elif ar.min() > 1:  # every image taller than wide
            relative[b] = 1, 1 / ar.min()
    batch_shapes = np.ceil(relative * imgsz / stride + pad).astype(np.int64) * stride
    return order, batch_index, batch_shapes
