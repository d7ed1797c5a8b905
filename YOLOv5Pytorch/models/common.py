"""YOLOv5 v6 building blocks. Attribute names equal ultralytics' so its state dicts load unchanged."""
import torch
import torch.nn as nn

from yolocore.architecture import initial_weights as initial
from yolocore.architecture.layers import autopad

BUFFERS = ("running_mean", "running_var", "num_batches_tracked", "anchors")


def draw_initial_weights(module):
    """Every weight and bias of module's convolutions and normalisation layers from the seeded generator of
    yolocore.architecture.initial_weights, in module order: the same seed gives both trees the same weights. init_rules,
    a dict of {parameter path below the module: rule} on any module, overrides the defaults."""
    modules = [(prefix, module_kind(m), {name: tuple(getattr(m, name).shape) for name in ("weight", "bias")
                                         if getattr(m, name, None) is not None}, getattr(m, "init_rules", {}))
               for prefix, m in module.named_modules()]
    parameters = {k: p for k, p in module.named_parameters() if not k.endswith(BUFFERS)}
    values = initial.initial_weights(modules, parameters)
    with torch.no_grad():
        for name, value in values.items():
            parameters[name].copy_(torch.from_numpy(value))


def module_kind(m):
    if isinstance(m, nn.Conv2d):
        return "conv"
    return "norm" if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)) else None


class Conv(nn.Module):
    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x):
        if self.conv.stride != (1, 1) and torch.is_grad_enabled() and torch.is_autocast_enabled("cpu"):
            # Float32 for strided convolutions when CPU autocast trains: oneDNN's bfloat16 backward of these is
            # 3-4x slower than float32's (a yolov5n step at 320 was 1.3x slower in bfloat16 than in float32 with
            # them, 1.15x faster without; docs/speed.md), while their forward and stride-1 convolutions gain.
            with torch.autocast("cpu", enabled=False):
                return self.act(self.bn(self.conv(x.float())))
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c1, c2, shortcut=True, g=1, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C3(nn.Module):
    def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    def __init__(self, c1, c2, k=5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat(x, self.d)


class Upsample(nn.Module):
    def __init__(self, size=None, scale_factor=2, mode="nearest"):
        super().__init__()
        self.size, self.scale_factor, self.mode = size, scale_factor, mode

    def forward(self, x):
        return nn.functional.interpolate(x, size=self.size, scale_factor=self.scale_factor, mode=self.mode)


class Detect(nn.Module):
    """Per-level 1x1 heads. Training returns raw maps (bs, na, ny, nx, no); eval also decodes boxes to pixels."""

    def __init__(self, nc=80, anchors=(), ch=()):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.stride = torch.ones(self.nl)
        # Stored in units of each level's stride, as ultralytics does, so its 'model.24.anchors' loads as is.
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self.reset_grid()

    def forward(self, x):
        z = []
        for i in range(self.nl):
            x[i] = self.m[i](x[i])
            bs, _, ny, nx = x[i].shape
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if not self.training:
                if self.grid[i].shape[2:4] != x[i].shape[2:4] or self.grid[i].device != x[i].device:
                    self.grid[i], self.anchor_grid[i] = self._make_grid(nx, ny, i)
                xy, wh, conf = x[i].sigmoid().split((2, 2, self.nc + 1), 4)
                xy = (xy * 2 + self.grid[i]) * self.stride[i]
                wh = (wh * 2) ** 2 * self.anchor_grid[i]
                z.append(torch.cat((xy, wh, conf), 4).view(bs, self.na * nx * ny, self.no))
        return x if self.training else (torch.cat(z, 1), x)

    def reset_grid(self):
        """Forget the grids that eval mode caches for the last input size: they hold the anchors of when they were
        made, and a later change of the anchors (AutoAnchor) would not reach them."""
        self.grid = [torch.empty(0)] * self.nl
        self.anchor_grid = [torch.empty(0)] * self.nl

    def _make_grid(self, nx, ny, i):
        d, t = self.anchors.device, self.anchors.dtype
        shape = 1, self.na, ny, nx, 2
        yv, xv = torch.meshgrid(torch.arange(ny, device=d, dtype=t), torch.arange(nx, device=d, dtype=t), indexing="ij")
        grid = torch.stack((xv, yv), 2).expand(shape) - 0.5
        anchor_grid = (self.anchors[i] * self.stride[i]).view((1, self.na, 1, 1, 2)).expand(shape)
        return grid, anchor_grid
