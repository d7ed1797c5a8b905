"""yolocore.plots.fgd without a framework: labels follow the letterbox, the figure and panels are written (with
the left-out student maps said), detections are counted as val.py matches them, the
student's attention is compared with the teacher's, titles name a checkpoint's run, and
a failed run leaves no output folder."""
import cv2
import numpy as np
import pytest

from yolocore.data.labels import unique_names
from yolocore.plots import raster
from yolocore.plots.fgd import (
    IMAGE_SIDE,
    MAP_PANELS,
    attention_rows,
    check_sources,
    detection_row,
    image_panels,
    letterboxed_sample,
    staged_dir,
    write_fgd_figure,
)
from yolocore.plots.fgd_plan import checkpoint_label


def level_maps(g, c, rng, student=True):
    feature = rng.random((g, g)).astype(np.float32)
    fg = np.zeros((g, g), np.float32)
    fg[1:3, 1:3] = 0.25
    maps = {"teacher_feature": feature, "teacher_spatial": feature / feature.mean(),
            "teacher_channel": np.full(c, 1.0, np.float32), "fg_mask": fg, "bg_mask": (fg == 0) / (fg == 0).sum(),
            "teacher_fg": feature * fg}
    if student:
        maps.update({k.replace("teacher", "student"): v * 0.5 for k, v in maps.items() if k.startswith("teacher")})
    return maps


def test_letterboxed_labels_land_on_the_same_pixels(tmp_path):
    """A 200x100 image with one white box: its label, moved into the 64x64 letterbox, still frames the white box."""
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    im = np.zeros((100, 200, 3), np.uint8)
    im[20:60, 100:180] = 255
    cv2.imwrite(str(tmp_path / "images" / "a.png"), im)
    (tmp_path / "labels" / "a.txt").write_text("1 0.7 0.4 0.4 0.4\n")
    out, labels = letterboxed_sample(str(tmp_path / "images" / "a.png"), 64, 32, nc=2)
    assert out.shape == (64, 64, 3) and labels.shape == (1, 5) and labels[0, 0] == 1
    _, cx, cy, w, h = labels[0] * [1, 64, 64, 64, 64]
    assert out[int(cy), int(cx)].min() > 200  # the box centre is white
    assert out[int(cy - h / 2) - 2, int(cx)].max() < 200 and out[int(cy + h / 2) + 2, int(cx)].max() < 200
    np.testing.assert_allclose([cx, cy, w, h], [44.8, 16 + 12.8, 25.6, 12.8], atol=1e-4)


def test_figure_and_panels_are_written_and_missing_maps_are_said(tmp_path):
    rng = np.random.default_rng(0)
    im = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    labels = np.array([[0, 0.5, 0.5, 0.25, 0.25]])
    det = np.array([[10, 10, 30, 30, 0.9, 1]])
    images = image_panels(im, labels, det, np.zeros((0, 6)), ["plane", "ship"], "FGD student")
    assert [(stem, title) for stem, title, _ in images] == [
        ("image_gt", "ground truth (1 boxes)"), ("image_teacher_det", "teacher detections (0)"),
        ("image_det", "FGD student detections (1)")]
    assert (images[2][2] != images[1][2]).any() and (images[1][2] == cv2.resize(im, (512, 512))[..., ::-1]).all()
    levels = [level_maps(8, 16, rng), level_maps(4, 32, rng, student=False)]
    written = write_fgd_figure(tmp_path, "x", images, levels, [17, 20], ["", "no align conv"], "title")
    names = {p.name for p in (tmp_path / "x").iterdir()}
    assert {f"layer17_{k}.png" for k, _, _ in MAP_PANELS} <= names
    assert "layer20_teacher_spatial.png" in names and "layer20_student_spatial.png" not in names
    assert len(written) == 1 + len(names) and all(cv2.imread(str(p)) is not None for p in written)
    with pytest.raises(ValueError, match="no note says why"):
        write_fgd_figure(tmp_path, "y", images, levels, [17, 20], ["", ""])


def test_every_panel_has_the_panel_size_and_is_drawn_in_the_figure(tmp_path):
    """Single panels are the figure's panels under a title naming the layer: one size, non-trivial content, and
    each one's map found again, pixel for pixel, in the figure."""
    rng = np.random.default_rng(1)
    images = image_panels(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8), np.zeros((0, 5)), np.zeros((0, 6)),
                          np.zeros((0, 6)), ["plane"])
    write_fgd_figure(tmp_path, "x", images, [level_maps(12, 16, rng), level_maps(6, 32, rng)], [17, 20])
    figure = cv2.imread(str(tmp_path / "x.png"))
    for path in sorted((tmp_path / "x").iterdir()):
        panel = cv2.imread(str(path))
        if path.stem.startswith("image"):
            assert panel.shape == (raster.TITLE_H + IMAGE_SIDE, IMAGE_SIDE, 3), path.name
            continue
        assert panel.shape == (raster.TITLE_H + raster.BODY_H, raster.PANEL_W, 3), path.name
        assert len(np.unique(panel.reshape(-1, 3), axis=0)) > 10, f"{path.name} is nearly blank"
        body = np.ascontiguousarray(panel[raster.TITLE_H :])
        x, y = cv2.minMaxLoc(cv2.matchTemplate(figure, body, cv2.TM_SQDIFF))[2]
        np.testing.assert_array_equal(figure[y : y + len(body), x : x + body.shape[1]], body, path.name)
    assert figure.shape[1] == 74 + len(MAP_PANELS) * raster.PANEL_W


def test_staged_dir_leaves_nothing_on_error_and_merges_with_exist_ok(tmp_path):
    out = tmp_path / "exp"
    with pytest.raises(RuntimeError), staged_dir(out) as tmp:
        (tmp / "half.png").write_bytes(b"x")
        raise RuntimeError("crash mid-run")
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    (out / "old.png").write_bytes(b"old")
    (out / "same.png").write_bytes(b"old")
    with staged_dir(out) as tmp:
        (tmp / "same.png").write_bytes(b"new")
    assert (out / "old.png").read_bytes() == b"old" and (out / "same.png").read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["exp"]


def test_sources_are_checked_and_names_kept_apart(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cv2.imwrite(str(tmp_path / "a" / "img.jpg"), np.zeros((32, 32, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "b" / "img.jpg"), np.zeros((32, 32, 3), np.uint8))
    files, warnings = check_sources(tmp_path, nc=2)
    assert len(files) == 2 and warnings == [] and unique_names(files) == ["img", "img_2"]
    (tmp_path / "a" / "img.txt").write_text("5 0.5 0.5 0.1 0.1\n")  # beside the image: its label file
    assert "class 5" in check_sources(tmp_path, nc=2)[1][0]
    (tmp_path / "b" / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="bad.png: cannot read"):
        check_sources(tmp_path, nc=2)
    with pytest.raises(FileNotFoundError):
        check_sources(tmp_path / "missing", nc=2)


def test_detection_row_counts_correct_detections_as_val_matches_them():
    h, w = 100, 200
    labels = np.array([[0, 0.25, 0.5, 0.2, 0.4], [1, 0.75, 0.5, 0.2, 0.4]])  # boxes (30, 30, 70, 70), (130, ...)
    first, second = [30, 30, 70, 70], [130, 30, 170, 70]
    det = np.array([[*first, 0.9, 0],  # correct
                    [*first, 0.8, 0],  # the same box again: a box is matched once
                    [*second, 0.7, 0],  # the wrong class
                    [150, 50, 190, 90, 0.6, 1]])  # the right class, IoU 0.23
    row = detection_row("a", "x/a.jpg", labels, det, det[:1], (h, w, 3))
    assert row == {"name": "a", "image": "x/a.jpg", "boxes": 2, "detections": 4, "correct": 1,
                   "teacher_detections": 1, "teacher_correct": 1}
    det[3, :4] = [132, 32, 172, 72]  # IoU 0.82
    assert detection_row("a", "x/a.jpg", labels, det[:0], det, (h, w, 3))["teacher_correct"] == 2
    assert detection_row("a", "x/a.jpg", labels, det, det[:0], (h, w, 3))["correct"] == 2
    assert detection_row("a", "x/a.jpg", labels[:0], det, det, (h, w, 3))["correct"] == 0


def test_figure_titles_name_a_checkpoints_run():
    assert checkpoint_label("runs/study/student_fgd/weights/best.pt") == "student_fgd/best.pt"
    assert checkpoint_label("downloads/teacher.pkl") == "teacher.pkl"


def test_attention_rows_compare_the_students_attention_with_the_teachers():
    rng = np.random.default_rng(2)
    close, other, plain = level_maps(8, 16, rng), level_maps(8, 16, rng), level_maps(4, 32, rng, student=False)
    close["student_spatial"] = close["teacher_spatial"] * 0.5 + 0.5  # the same pattern, half the contrast
    close["student_channel"] = np.linspace(0.5, 1.5, 16)
    other["student_spatial"] = other["teacher_spatial"].max() - other["teacher_spatial"]  # the opposite pattern
    other["student_channel"] = other["teacher_channel"]
    rows = attention_rows("a", [close, other, plain], [17, 20, 23])
    assert [(r["name"], r["layer"]) for r in rows] == [("a", 17), ("a", 20)], "no row where student maps are left out"
    first, second = ({k: float(v) for k, v in r.items() if k.endswith(("corr", "gap"))} for r in rows)
    t = close["teacher_spatial"]
    assert first["spatial_corr"] == pytest.approx(1) and second["spatial_corr"] == pytest.approx(-1)
    assert first["spatial_gap"] == pytest.approx(np.abs(t * 0.5 + 0.5 - t).mean(), rel=1e-5)
    assert first["channel_gap"] == pytest.approx(np.abs(np.linspace(-0.5, 0.5, 16)).mean(), rel=1e-5)
    assert np.isnan(first["channel_corr"]), "the teacher's channel attention is flat: no pattern to follow"
    assert second["channel_gap"] == 0
