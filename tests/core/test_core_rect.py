"""yolocore.data.rect and YoloDataset(rect=True): YOLOv5's rectangular validation batches."""
import cv2
import numpy as np
import pytest

from yolocore.data.dataset import YoloDataset
from yolocore.data.rect import rect_batches
from yolocore.evaluation.boxes import scale_boxes, xywhn2xyxy


def test_batches_take_the_shapes_yolov5_validates_at():
    shapes = [(958, 808), (600, 800), (500, 500), (1000, 500), (400, 900), (600, 800)]  # (w, h)
    order, batch_index, batch_shapes = rect_batches(shapes, 2, 512)
    # by h / w: 0.5, 0.84, 1.0, 1.33, 1.33 (a tie keeps the file order), 2.25
    assert order.tolist() == [3, 0, 2, 1, 5, 4]
    assert batch_index.tolist() == [0, 0, 1, 1, 2, 2]
    # Wide batch: the tallest image is 808 / 958 * 512 = 432 px high, 13.5 strides; with half a stride of margin
    # ceil(14.0) = 14 strides, 448 px; the width is 512 px plus half a stride, 17 strides. A batch with a square image
    # stays square; a tall batch takes its widest image's width, 0.75 * 16 + 0.5 = 12.5 -> 13 strides.
    assert batch_shapes.tolist() == [[448, 544], [544, 544], [544, 416]]

    order, batch_index, batch_shapes = rect_batches(shapes, 32, 512)
    assert batch_index.tolist() == [0] * 6 and batch_shapes.tolist() == [[544, 544]]


def write_box_image(folder, name, w, h, box):
    """A grey image with a red rectangle at box (x1, y1, x2, y2) and its label."""
    im = np.full((h, w, 3), 90, np.uint8)
    x1, y1, x2, y2 = box
    im[y1:y2, x1:x2] = (0, 0, 255)
    (folder / "images").mkdir(exist_ok=True)
    (folder / "labels").mkdir(exist_ok=True)
    cv2.imwrite(str(folder / "images" / f"{name}.png"), im)
    (folder / "labels" / f"{name}.txt").write_text(
        f"0 {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}\n")


def test_rect_items_share_their_batch_shape_and_keep_boxes_on_their_pixels(tmp_path):
    boxes = {"a": (300, 150, (60, 30, 180, 110)), "b": (120, 240, (20, 100, 90, 200)),
             "c": (200, 200, (50, 50, 150, 120)), "d": (240, 120, (10, 10, 100, 60))}
    for name, (w, h, box) in boxes.items():
        write_box_image(tmp_path, name, w, h, box)
    ds = YoloDataset(tmp_path / "images", imgsz=128, nc=1, cache=False, rect=True, batch_size=2)
    assert [f[-5] for f in ds.im_files] == ["a", "d", "c", "b"]  # h / w: 0.5, 0.5, 1, 2
    assert ds.batch_shapes.tolist() == [[96, 160], [160, 160]]
    for i in range(len(ds)):
        img, labels, path, shapes = ds[i]
        w0, h0, (x1, y1, x2, y2) = boxes[path[-5]]
        assert img.shape[1:] == tuple(ds.batch_shapes[i // 2]) and shapes[0] == (h0, w0)
        bgr = img.transpose(1, 2, 0)[..., ::-1]
        red = (bgr[..., 2] > 150) & (bgr[..., 1] < 80)
        box = xywhn2xyxy(labels[:, 2:], img.shape[2], img.shape[1])[0]
        ys, xs = np.nonzero(red)
        assert abs(xs.min() - box[0]) <= 1 and abs(xs.max() + 1 - box[2]) <= 1
        assert abs(ys.min() - box[1]) <= 1 and abs(ys.max() + 1 - box[3]) <= 1
        back = scale_boxes(img.shape[1:], box[None].astype(np.float64), (h0, w0), ratio_pad=shapes[1])
        np.testing.assert_allclose(back[0], [x1, y1, x2, y2], atol=0.5)
    imgs, *_ = YoloDataset.collate_fn([ds[0], ds[1]])
    assert imgs.shape == (2, 3, 96, 160)
    assert ds.largest_image() == (160, 160)  # what a worker's shared-memory slot must hold
    assert YoloDataset(tmp_path / "images", imgsz=128, nc=1, cache=False).largest_image() == (128, 128)


def test_rect_batches_are_for_validation_only(tmp_path):
    write_box_image(tmp_path, "a", 64, 32, (10, 5, 30, 20))
    with pytest.raises(ValueError, match="validation"):
        YoloDataset(tmp_path / "images", imgsz=64, nc=1, cache=False, augment=True, rect=True,
                    hyp={k: 0.0 for k in ("hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear",
                                          "perspective", "flipud", "fliplr", "mosaic", "mixup")})
