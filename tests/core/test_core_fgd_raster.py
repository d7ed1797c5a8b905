"""yolocore.plots.raster, which draws visualize.py's panels as arrays: maps keep one block of pixels per cell in
matplotlib's colours, the colour bar spans 0 to the top value, bars and text are drawn, the row labels stay inside
the figure, and the PNG writer round-trips every pixel."""
import cv2
import numpy as np

from yolocore.plots import raster


def test_png_round_trips_every_pixel(tmp_path):
    rng = np.random.default_rng(0)
    for shape in [(1, 1, 3), (7, 5, 3), (64, 80, 3)]:
        rgb = rng.integers(0, 256, shape, dtype=np.uint8)
        (tmp_path / "a.png").write_bytes(raster.encode_png(rgb))
        np.testing.assert_array_equal(cv2.imread(str(tmp_path / "a.png"))[..., ::-1], rgb)


def test_map_cells_are_blocks_in_the_colour_maps_colours_and_the_bar_spans_zero_to_vmax():
    values = np.array([[0.0, 1.0], [2.0, 4.0]])
    body = raster.map_body(values, 4.0, "viridis")
    table = raster.colour_table("viridis")
    assert body.shape == (raster.BODY_H, raster.PANEL_W, 3)
    cell = raster.MAP_SIDE // 2
    for (i, j), index in zip([(0, 0), (0, 1), (1, 0), (1, 1)], [0, 64, 128, 255]):
        y, x = raster.MAP_TOP + i * cell, raster.MAP_LEFT + j * cell
        block = body[y + 2 : y + cell - 2, x + 2 : x + cell - 2].reshape(-1, 3)
        np.testing.assert_array_equal(block, np.broadcast_to(table[index], block.shape))
    bar_x = raster.MAP_LEFT + raster.MAP_SIDE + raster.CBAR_GAP + raster.CBAR_W // 2
    np.testing.assert_array_equal(body[raster.MAP_TOP, bar_x], table[255])
    np.testing.assert_array_equal(body[raster.MAP_TOP + raster.MAP_SIDE - 1, bar_x], table[0])
    labels = body[:, bar_x + raster.CBAR_W:]  # the tick labels right of the bar
    assert (labels.min(2) < 100).sum() > 100


def test_channel_bars_show_both_sides_and_the_legend():
    teacher = np.linspace(0.5, 1.5, 64)
    with_student = raster.channel_body(teacher, teacher[::-1])
    alone = raster.channel_body(teacher)

    def has(body, rgb):
        tint = np.round(255 * (1 - raster.BAR_ALPHA) + np.asarray(rgb) * raster.BAR_ALPHA)
        return (np.abs(body.astype(int) - tint).max(2) <= 1).sum() > 200

    assert has(with_student, raster.TEACHER_RGB) and has(with_student, raster.STUDENT_RGB)
    assert has(alone, raster.TEACHER_RGB) and not has(alone, raster.STUDENT_RGB)


def test_text_is_drawn_wrapped_and_the_row_labels_stay_inside_the_figure():
    canvas = raster.blank(60, 400)
    raster.put_text(canvas, "teacher mean |F| x fg mask", 8, 200, 10)
    assert (canvas.min(2) < 100).sum() > 100
    assert len(raster.wrap("background mask (all zero: no background cell)", 8, raster.PANEL_W - 12)) == 2
    panel = raster.titled(raster.map_body(np.ones((4, 4)), 1.0, "viridis"), "a panel")
    figure = raster.grid_figure("title", [panel], [("layer 17\n64x64 grid", [panel, panel])])
    label_band = figure[-panel.shape[0]:, :74]
    ink = np.argwhere(label_band.min(2) < 128)
    assert len(ink) > 100 and ink[:, 1].min() > 2 and ink[:, 1].max() < 72, "label cut at the figure's edge"
