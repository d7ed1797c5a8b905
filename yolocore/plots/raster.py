"""Panels drawn straight into RGB arrays, for visualize.py's figures: colour-mapped maps with their colour bars,
bar plots, titles and notes, and the grid that puts them together.

Drawing each panel through its own matplotlib figure cost seconds per image (layout, ticks and Agg rendering of
30-odd figures); here a panel is a few numpy operations. The look stays matplotlib's: its colour maps, its tick
locator, and text rendered by its FreeType wrapper in its default font (DejaVu Sans), at 150 dots per inch.
"""
import struct
import textwrap
import zlib
from functools import lru_cache

import cv2
import numpy as np
from matplotlib import colormaps, font_manager
from matplotlib.ft2font import FT2Font, LoadFlags
from matplotlib.ticker import MaxNLocator

DPI = 150
WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (128, 128, 128)
TEACHER_RGB, STUDENT_RGB = (31, 119, 180), (255, 127, 14)  # matplotlib's tab:blue and tab:orange
BAR_ALPHA = 0.6
PANEL_W, BODY_H, TITLE_H = 360, 276, 44  # a panel: a title band over its body
MAP_SIDE = 256  # the box a map is fitted into: 64, 32 and 16 cells (imgsz 512) are whole pixels each
MAP_LEFT, MAP_TOP = 14, 6
CBAR_GAP, CBAR_W, TICK_LEN = 10, 12, 4


# ---------------------------------------------------------------- text


@lru_cache(maxsize=1)
def _font():
    """The one FreeType face; only the drawing thread uses it (the writer threads only compress)."""
    return FT2Font(font_manager.findfont("DejaVu Sans"))


@lru_cache(maxsize=64)
def _ascent(pt):
    """Pixels from the top of the tallest glyph to the baseline, so lines of any text share one baseline."""
    return _glyphs("|Ág", pt)[1]


@lru_cache(maxsize=4096)  # titles, labels and tick values repeat from image to image
def _glyphs(line, pt):
    """(coverage (h, w) uint8, pixels from its top to the baseline) of one line of text."""
    font = _font()
    font.clear()
    font.set_size(pt, DPI)
    font.set_text(line, 0.0, flags=LoadFlags.FORCE_AUTOHINT)
    font.draw_glyphs_to_bitmap(antialiased=True)
    image = np.asarray(font.get_image()).copy()
    return image, image.shape[0] - round(font.get_descent() / 64)


def line_height(pt):
    return round(pt * DPI / 72 * 1.25)


def text_width(line, pt):
    return _glyphs(line, pt)[0].shape[1]


def wrap(text, pt, width):
    """text's lines, each broken at spaces into lines at most width pixels wide where it can be."""
    lines = []
    for line in text.split("\n"):
        chars = len(line)
        while chars > 8 and text_width(textwrap.fill(line, chars).split("\n")[0], pt) > width:
            chars -= 2
        lines += textwrap.wrap(line, max(chars, 1)) or [""]
    return lines


def text_mask(text, pt, width=None):
    """Coverage (h, w) uint8 of text in lines centred on each other, wrapped to width pixels when given."""
    lines = wrap(text, pt, width) if width else text.split("\n")
    step, ascent = line_height(pt), _ascent(pt)
    glyphs = [_glyphs(line, pt) if line else (np.zeros((1, 1), np.uint8), 0) for line in lines]
    w = max(g.shape[1] for g, _ in glyphs)
    mask = np.zeros((step * (len(lines) - 1) + ascent + round(step * 0.35), w), np.uint8)
    for i, (g, top) in enumerate(glyphs):
        y, x = i * step + ascent - top, (w - g.shape[1]) // 2
        y0, g = max(y, 0), g[max(-y, 0):]
        h = min(g.shape[0], mask.shape[0] - y0)
        mask[y0 : y0 + h, x : x + g.shape[1]] = np.maximum(mask[y0 : y0 + h, x : x + g.shape[1]], g[:h])
    return mask


def blend(canvas, mask, x, y, color=BLACK):
    """Paint color into canvas (h, w, 3) uint8 through coverage mask with its top-left corner at (x, y), clipped."""
    h, w = canvas.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + mask.shape[1], w), min(y + mask.shape[0], h)
    if x0 >= x1 or y0 >= y1:
        return
    a = mask[y0 - y : y1 - y, x0 - x : x1 - x, None].astype(np.float32) / 255
    region = canvas[y0:y1, x0:x1]
    region[:] = (region * (1 - a) + np.asarray(color, np.float32) * a + 0.5).astype(np.uint8)


def put_text(canvas, text, pt, x, y, ha="center", va="top", width=None, rotate=False):
    """Write text at (x, y), aligned by ha (left, center, right) and va (top, center); rotate turns it a quarter
    counter-clockwise, to read bottom to top."""
    mask = text_mask(text, pt, width)
    if rotate:
        mask = np.ascontiguousarray(np.rot90(mask))
    h, w = mask.shape
    x -= {"left": 0, "center": w // 2, "right": w}[ha]
    y -= {"top": 0, "center": h // 2}[va]
    blend(canvas, mask, x, y)


# ---------------------------------------------------------------- panels


def blank(h, w):
    return np.full((h, w, 3), 255, np.uint8)


@lru_cache(maxsize=16)
def colour_table(name):
    """256 RGB uint8 colours of a matplotlib colour map, as imshow samples it."""
    return (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255 + 0.5).astype(np.uint8)


def ticks(vmax, nbins=4, integer=False):
    """matplotlib's tick values for an axis from 0 to vmax, within it."""
    values = MaxNLocator(nbins=nbins, steps=[1, 2, 2.5, 5, 10], integer=integer).tick_values(0, vmax)
    return [float(v) for v in values if -1e-12 <= v <= vmax * (1 + 1e-9)]


def _frame(canvas, x0, y0, x1, y1):
    cv2.rectangle(canvas, (x0, y0), (x1, y1), BLACK, 1)


def map_body(values, vmax, cmap):
    """A (BODY_H, PANEL_W) panel body: values (h, w) >= 0 as colour-mapped cells on [0, vmax], one block of
    pixels per cell (no interpolation), and the colour bar with its ticks."""
    h, w = values.shape
    scale = MAP_SIDE / max(h, w)
    mh, mw = max(1, round(h * scale)), max(1, round(w * scale))
    table = colour_table(cmap)
    index = np.clip(values / vmax * 256, 0, 255).astype(np.intp)
    body = blank(BODY_H, PANEL_W)
    x, y = MAP_LEFT + (MAP_SIDE - mw) // 2, MAP_TOP + (MAP_SIDE - mh) // 2
    body[y : y + mh, x : x + mw] = cv2.resize(table[index], (mw, mh), interpolation=cv2.INTER_NEAREST)
    _frame(body, x - 1, y - 1, x + mw, y + mh)

    bx = MAP_LEFT + MAP_SIDE + CBAR_GAP
    body[y : y + mh, bx : bx + CBAR_W] = table[np.linspace(255, 0, mh).round().astype(np.intp)][:, None]
    _frame(body, bx - 1, y - 1, bx + CBAR_W, y + mh)
    for t in ticks(vmax, nbins=6):
        ty = y + mh - 1 - round(t / vmax * (mh - 1))
        body[ty, bx + CBAR_W : bx + CBAR_W + TICK_LEN] = BLACK
        put_text(body, f"{t:.2g}", 7, bx + CBAR_W + TICK_LEN + 3, ty, ha="left", va="center")
    return body


def channel_body(teacher, student=None):
    """A (BODY_H, PANEL_W) panel body: channel attention as bars, teacher blue and student orange over it (both
    see-through), a dashed line at 1 (the mean of a channel attention), ticks, a legend and the axis label."""
    body = blank(BODY_H, PANEL_W)
    x0, y0, x1, y1 = 46, MAP_TOP, PANEL_W - 8, BODY_H - 46
    aw, ah = x1 - x0, y1 - y0
    series = [(teacher, TEACHER_RGB, "teacher")] + ([(student, STUDENT_RGB, "student")] if student is not None else [])
    ymax = 1.05 * max(1.0, *(float(v.max()) for v, _, _ in series))
    channel_of_column = ((np.arange(aw) + 0.5) * len(teacher) / aw).astype(np.intp)
    rows = np.arange(ah)[:, None]
    plot = body[y0:y1, x0:x1].astype(np.float32)
    for values, color, _ in series:
        bar_top = ah - np.round(values[channel_of_column] / ymax * ah)
        covered = (rows >= bar_top[None])[..., None]
        plot = np.where(covered, plot * (1 - BAR_ALPHA) + np.asarray(color, np.float32) * BAR_ALPHA, plot)
    body[y0:y1, x0:x1] = (plot + 0.5).astype(np.uint8)
    one = y1 - 1 - round(1.0 / ymax * (ah - 1))
    body[one, x0:x1][(np.arange(aw) // 5) % 2 == 0] = BLACK
    _frame(body, x0 - 1, y0 - 1, x1, y1)

    for t in ticks(ymax):
        ty = y1 - 1 - round(t / ymax * (ah - 1))
        body[ty, x0 - TICK_LEN : x0] = BLACK
        put_text(body, f"{t:g}", 6, x0 - TICK_LEN - 3, ty, ha="right", va="center")
    for t in ticks(len(teacher) - 1, integer=True):
        tx = x0 + round((t + 0.5) / len(teacher) * aw)
        body[y1 : y1 + TICK_LEN, tx] = BLACK
        put_text(body, f"{t:g}", 6, tx, y1 + TICK_LEN + 2)
    put_text(body, "channel", 7, (x0 + x1) // 2, y1 + 22)

    lx, ly, step = x1 - 92, y0 + 6, line_height(6)
    cv2.rectangle(body, (lx - 4, ly - 4), (x1 - 6, ly + step * len(series) + 2), WHITE, -1)
    cv2.rectangle(body, (lx - 4, ly - 4), (x1 - 6, ly + step * len(series) + 2), GREY, 1)
    for i, (_, color, label) in enumerate(series):
        swatch = tuple(round(255 * (1 - BAR_ALPHA) + c * BAR_ALPHA) for c in color)
        cv2.rectangle(body, (lx, ly + i * step + 3), (lx + 20, ly + i * step + step - 5), swatch, -1)
        put_text(body, label, 6, lx + 26, ly + i * step + step // 2 - 1, ha="left", va="center")
    return body


def note_body(note):
    """A (BODY_H, PANEL_W) panel body that says why the panel is left out."""
    body = blank(BODY_H, PANEL_W)
    put_text(body, f"left out:\n{note}", 7, PANEL_W // 2, BODY_H // 2, va="center", width=PANEL_W - 60)
    return body


def image_body(rgb, side):
    """rgb scaled to fit a side x side box, at least as wide as a title needs."""
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    body = blank(sh, max(sw, PANEL_W))
    x = (body.shape[1] - sw) // 2
    body[:, x : x + sw] = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return body


def titled(body, title, pt=8, title_h=TITLE_H):
    """body under a band of title_h pixels holding title, wrapped to the body's width, its last line at the
    band's foot."""
    band = blank(title_h, body.shape[1])
    mask = text_mask(title, pt, body.shape[1] - 12)
    blend(band, mask, (body.shape[1] - mask.shape[1]) // 2, title_h - mask.shape[0])
    return np.concatenate([band, body])


def grid_figure(title, top, rows, label_w=74, title_h=40):
    """The combined figure: title, then the panels of top side by side, each centred in an equal share of the
    width, then one labelled row of panels per (label, panels); drawn into one array, without copies of rows."""
    width = label_w + max(sum(p.shape[1] for p in panels) for _, panels in rows)
    top_h = max(p.shape[0] for p in top)
    row_hs = [max(p.shape[0] for p in panels) for _, panels in rows]
    canvas = blank(title_h + top_h + sum(row_hs), width)
    put_text(canvas, title, 10, width // 2, 10, width=width - 20)
    share = width // len(top)
    for i, panel in enumerate(top):
        x = i * share + (share - panel.shape[1]) // 2
        canvas[title_h : title_h + panel.shape[0], x : x + panel.shape[1]] = panel
    y = title_h + top_h
    for (label, panels), h in zip(rows, row_hs):
        put_text(canvas, label, 9, label_w // 2, y + TITLE_H + BODY_H // 2, va="center", rotate=True)
        x = label_w
        for panel in panels:
            canvas[y : y + panel.shape[0], x : x + panel.shape[1]] = panel
            x += panel.shape[1]
        y += h
    return canvas


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(rgb, level=1):
    """PNG bytes of an RGB uint8 image. Every row uses PNG's 'Up' filter (the difference to the row above) and
    deflate runs at a low level: OpenCV's and Pillow's writers choose a filter per row by trying them, which took
    twice as long for files a few percent smaller."""
    h, w, _ = rgb.shape
    rows = np.ascontiguousarray(rgb).reshape(h, w * 3)
    data = np.empty((h, w * 3 + 1), np.uint8)
    data[:, 0] = 2  # filter type Up; the first row's "row above" is zeros
    data[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=data[1:, 1:])
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8 bits, truecolour, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(data.tobytes(), level))
            + _chunk(b"IEND", b""))
