"""Turns a model yaml into per-layer constructor arguments, once for both framework trees.

Each tree maps the module names below to its own classes and builds the layers from these specs, so
layer indices, channel widths and depths are identical to ultralytics YOLOv5 by construction."""
import math
from dataclasses import dataclass

from yolocore.config import load_model_cfg

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


def model_yaml(cfg, nc=None, anchors=None):
    """The model yaml as a dict (a name from yolocore/models or a path), with nc and anchors replaced when given."""
    yaml = load_model_cfg(cfg)
    if nc and nc != yaml["nc"]:
        yaml["nc"] = nc
    if anchors is not None:
        yaml["anchors"] = anchors
    return yaml


def run_layers(layers, x, save, feature_layers=(), features_only=False):
    """YOLOv5's pass through its layer graph, in either framework: each layer takes the previous layer's output
    (source -1) or the kept outputs it names; save lists the layers whose outputs a later layer takes. Returns (the
    last layer's output, the outputs of feature_layers, from the same pass). features_only stops after the last of
    feature_layers and returns (None, their outputs): a frozen KD teacher needs no Detect head."""
    bad = [i for i in feature_layers if not 0 <= i < len(layers) - 1]
    if bad:
        raise ValueError(f"feature layers {bad} do not exist: this model has layers 0..{len(layers) - 2} before Detect")
    y, feats = [], {}
    for m in layers:
        if m.f != -1:
            x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
        x = m(x)
        if m.i in feature_layers:
            feats[m.i] = x
            if features_only and len(feats) == len(set(feature_layers)):
                return None, [feats[i] for i in feature_layers]
        y.append(x if m.i in save else None)
    return x, [feats[i] for i in feature_layers]
