"""Turns a model yaml into per-layer constructor arguments, once for both framework trees.

Each tree maps the module names below to its own classes and builds the layers from these specs, so
layer indices, channel widths and depths are identical to ultralytics YOLOv5 by construction."""
import math
from dataclasses import dataclass

MODULE_NAMES = ("Conv", "Bottleneck", "C3", "SPPF", "Concat", "nn.Upsample", "Detect")
_CHANNEL_MODULES = {"Conv", "Bottleneck", "C3", "SPPF"}
_REPEAT_INSIDE = {"C3"}


@dataclass
class LayerSpec:
    index: int
    source: object  # int or list of ints; -1 is the previous layer
    repeats: int  # how many copies to stack in an nn.Sequential (1 = the module itself)
    module: str
    args: list
    out_channels: int


def autopad(k, p=None):
    """'Same' padding for odd kernels, as ultralytics."""
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


def make_divisible(x, divisor=8):
    return math.ceil(x / divisor) * divisor


def _resolve_arg(arg, nc, anchors):
    # Yaml strings that ultralytics eval()s; an explicit table keeps that safe.
    table = {"None": None, "nc": nc, "anchors": anchors, "True": True, "False": False}
    return table.get(arg, arg) if isinstance(arg, str) else arg


def parse_model_cfg(cfg, ch=3):
    """Layer specs and the sorted indices whose outputs later layers read (ultralytics' 'save' list)."""
    anchors, nc = cfg["anchors"], cfg["nc"]
    gd, gw = cfg["depth_multiple"], cfg["width_multiple"]
    na = len(anchors[0]) // 2 if isinstance(anchors, list) else anchors
    no = na * (nc + 5)
    specs, save, chs = [], [], [ch]
    for i, (f, n, name, args) in enumerate(cfg["backbone"] + cfg["head"]):
        if name not in MODULE_NAMES:
            raise ValueError(f"layer {i}: unknown module '{name}' (known: {', '.join(MODULE_NAMES)})")
        args = [_resolve_arg(a, nc, anchors) for a in args]
        n = max(round(n * gd), 1) if n > 1 else n
        if name in _CHANNEL_MODULES:
            c1, c2 = chs[f], args[0]
            if c2 != no:
                c2 = make_divisible(c2 * gw, 8)
            args = [c1, c2, *args[1:]]
            if name in _REPEAT_INSIDE:
                args.insert(2, n)
                n = 1
        elif name == "Concat":
            c2 = sum(chs[x] for x in f)
        elif name == "Detect":
            args.append([chs[x] for x in f])
            if isinstance(args[1], int):
                args[1] = [list(range(args[1] * 2))] * len(f)
            c2 = no
        else:
            c2 = chs[f]
        specs.append(LayerSpec(i, f, n, name, args, c2))
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        if i == 0:
            chs = []
        chs.append(c2)
    return specs, sorted(set(save))
