"""YOLOv5 v6 building blocks. Attribute names equal ultralytics' so its state dicts load unchanged."""
import jittor as jt
import jittor.nn as nn

from yolocore.architecture import autopad


def unsaved_attribute(name):
    """A Var attribute outside parameters() and state_dict(), like a plain tensor attribute in PyTorch: Jittor
    registers every Var attribute except those whose names start with '_'."""
    private = "_" + name
    return property(lambda self: getattr(self, private), lambda self, value: setattr(self, private, value))


class BatchNorm2d(nn.Module):
    """PyTorch's BatchNorm2d. Jittor's own computes the batch variance in one pass (E[x^2] - E[x]^2, less precise
    in float32) and keeps the biased variance as running_var; both drift from the PyTorch tree in training.
    The batch statistics are summed in float64: Jittor's CPU float32 reductions add in one long pass, and a mean
    over the 409,600 values of a channel (batch 16 at imgsz 320) is off by 1.6e-4, which left train-mode features
    1e-3 from PyTorch's; float64 brings that to 1e-5 for about 4% of a step.
    sync (set by --sync-bn under mpirun): the statistics are means over every process's equal batch."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum, self.sync = num_features, eps, momentum, False
        self.weight = jt.ones(num_features)
        self.bias = jt.zeros(num_features)
        self.running_mean = jt.zeros(num_features).stop_grad()
        self.running_var = jt.ones(num_features).stop_grad()

    def _channel_mean(self, x64):
        mean = x64.mean(dims=(0, 2, 3))
        return mean.mpi_all_reduce("mean") if self.sync and jt.in_mpi else mean

    def execute(self, x):
        if self.is_training():
            x64 = x.float64()
            mean64 = self._channel_mean(x64)
            var = self._channel_mean((x64 - mean64.reshape(1, -1, 1, 1)) ** 2).float32()
            mean = mean64.float32()
            n = x.numel() / x.shape[1] * (jt.world_size if self.sync and jt.in_mpi else 1)
            self.running_mean.update(self.running_mean + (mean.detach() - self.running_mean) * self.momentum)
            self.running_var.update(self.running_var + (var.detach() * n / (n - 1) - self.running_var) * self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        w = self.weight / jt.sqrt(var + self.eps)
        b = self.bias - mean * w
        return x * w.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1)


class MaxPool2d(nn.Module):
    """torch.nn.MaxPool2d. Jittor's refuses maps not larger than the kernel (SPPF's 5x5 pool sees 2x2 maps at
    imgsz 64), so the -inf border PyTorch implies is padded explicitly and the pool itself runs unpadded."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.padding = padding
        self.pool = nn.MaxPool2d(kernel_size, stride, 0)

    def execute(self, x):
        p = self.padding
        return self.pool(nn.pad(x, (p, p, p, p), value=float("-inf")) if p else x)


class Conv(nn.Module):
    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=False)
        self.bn = BatchNorm2d(c2)
        self.act = nn.SiLU() if act else nn.Identity()

    def execute(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c1, c2, shortcut=True, g=1, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def execute(self, x):
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C3(nn.Module):
    def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def execute(self, x):
        return self.cv3(jt.concat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    def __init__(self, c1, c2, k=5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def execute(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(jt.concat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def execute(self, x):
        return jt.concat(x, self.d)


class Upsample(nn.Module):
    def __init__(self, size=None, scale_factor=2, mode="nearest"):
        super().__init__()
        self.size, self.scale_factor, self.mode = size, scale_factor, mode

    def execute(self, x):
        return nn.interpolate(x, size=self.size, scale_factor=self.scale_factor, mode=self.mode)


class Detect(nn.Module):
    """Per-level 1x1 heads. Training returns raw maps (bs, na, ny, nx, no); eval also decodes boxes to pixels."""

    stride = unsaved_attribute("stride")

    def __init__(self, nc=80, anchors=(), ch=()):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.stride = jt.ones(self.nl)
        # Stored in units of each level's stride, as ultralytics does, so its 'model.24.anchors' loads as is.
        self.register_buffer("anchors", jt.array(anchors).float().view(self.nl, -1, 2).stop_grad())
        self.m = nn.ModuleList([nn.Conv2d(x, self.no * self.na, 1) for x in ch])
        self.grid = [jt.zeros(0)] * self.nl
        self.anchor_grid = [jt.zeros(0)] * self.nl

    def execute(self, x):
        z = []
        for i in range(self.nl):
            x[i] = self.m[i](x[i])
            bs, _, ny, nx = x[i].shape
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2)
            if not self.training:
                if tuple(self.grid[i].shape)[2:4] != tuple(x[i].shape)[2:4]:
                    self.grid[i], self.anchor_grid[i] = self._make_grid(nx, ny, i)
                xy, wh, conf = x[i].sigmoid().split((2, 2, self.nc + 1), 4)
                xy = (xy * 2 + self.grid[i]) * self.stride[i]
                wh = (wh * 2) ** 2 * self.anchor_grid[i]
                z.append(jt.concat((xy, wh, conf), 4).view(bs, self.na * nx * ny, self.no))
        return x if self.training else (jt.concat(z, 1), x)

    def _make_grid(self, nx, ny, i):
        t = self.anchors.dtype
        shape = 1, self.na, ny, nx, 2
        yv, xv = jt.meshgrid(jt.arange(ny, dtype=t), jt.arange(nx, dtype=t))
        grid = jt.stack((xv, yv), 2).expand(shape) - 0.5
        anchor_grid = (self.anchors[i] * self.stride[i]).view((1, self.na, 1, 1, 2)).expand(shape)
        return grid, anchor_grid
