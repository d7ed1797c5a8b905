"""YOLOv5 v6 building blocks. Attribute names equal ultralytics' so its state dicts load unchanged."""
import jittor as jt
import jittor.nn as nn

from yolocore import init as initial
from yolocore.architecture import autopad

BUFFERS = ("running_mean", "running_var", "num_batches_tracked", "anchors")


def unsaved_attribute(name):
    """A Var attribute outside parameters() and state_dict(), like a plain tensor attribute in PyTorch: Jittor
    registers every Var attribute except those whose names start with '_'."""
    private = "_" + name
    return property(lambda self: getattr(self, private), lambda self, value: setattr(self, private, value))


def channel_sum(x):
    """(N, C, H, W) -> (C,) in three short passes (over W, then H, then N). Jittor's CPU float32 reduction adds in
    one long pass: over the 409,600 values of a channel (batch 16 at imgsz 320) its sum is off by 1e-4 relative,
    three passes of at most a few hundred values keep it near 1e-7."""
    return x.sum(3).sum(2).sum(0)


class TrainNorm(jt.Function):
    """Train-mode batch normalisation with its gradient written out, as PyTorch's kernel computes it. Jittor's
    automatic gradient of the same expression took 3.4x as long (45 against 13 ms fwd+bwd on a (16, 16, 160, 160)
    map); written out, a yolov5n training step (imgsz 320, batch 16) takes 500 instead of 620 ms.
    sync: mean and variance over every process's equal batch, and the gradient of the sum of every process's loss,
    as an all-reduce in the forward pass implies."""

    def execute(self, x, weight, bias, eps, sync):
        self.sync = sync
        count = x.numel() / x.shape[1]
        mean = self._across_processes(channel_sum(x) / count)
        centred = x - mean.reshape(1, -1, 1, 1)
        self.var = self._across_processes(channel_sum(centred.sqr()) / count)
        self.mean, self.count = mean, count
        self.invstd = 1.0 / jt.sqrt(self.var + eps)
        self.x, self.weight = x, weight
        scale = weight * self.invstd
        return x * scale.reshape(1, -1, 1, 1) + (bias - mean * scale).reshape(1, -1, 1, 1)

    def grad(self, grad_y):
        centred = self.x - self.mean.reshape(1, -1, 1, 1)
        grad_bias = channel_sum(grad_y)
        grad_weight = channel_sum(grad_y * centred) * self.invstd
        mean_grad_y = self._across_processes(grad_bias / self.count)
        mean_grad_xhat = self._across_processes(grad_weight / self.count)
        scale = self.weight * self.invstd
        grad_x = (grad_y - mean_grad_y.reshape(1, -1, 1, 1)
                  - centred * (self.invstd * mean_grad_xhat).reshape(1, -1, 1, 1)) * scale.reshape(1, -1, 1, 1)
        return grad_x, grad_weight, grad_bias, None, None

    def _across_processes(self, per_channel_mean):
        return per_channel_mean.mpi_all_reduce("mean") if self.sync else per_channel_mean


class BatchNorm2d(nn.Module):
    """PyTorch's BatchNorm2d. Jittor's own computes the batch variance in one pass (E[x^2] - E[x]^2, less precise
    in float32) and keeps the biased variance as running_var; both drift from the PyTorch tree in training.
    sync (set by --sync-bn under mpirun): the statistics are means over every process's equal batch."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum, self.sync = num_features, eps, momentum, False
        self.weight = jt.ones(num_features)
        self.bias = jt.zeros(num_features)
        self.running_mean = jt.zeros(num_features).stop_grad()
        self.running_var = jt.ones(num_features).stop_grad()

    def execute(self, x):
        if not self.is_training():
            w = self.weight / jt.sqrt(self.running_var + self.eps)
            b = self.bias - self.running_mean * w
            return x * w.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1)
        norm = TrainNorm()
        y = norm(x, self.weight, self.bias, self.eps, self.sync and jt.in_mpi)
        n = norm.count * (jt.world_size if self.sync and jt.in_mpi else 1)
        self.running_mean.update(self.running_mean + (norm.mean.detach() - self.running_mean) * self.momentum)
        self.running_var.update(self.running_var + (norm.var.detach() * n / (n - 1) - self.running_var) * self.momentum)
        return y


class LayerNorm(nn.LayerNorm):
    """PyTorch's LayerNorm. Jittor's own takes the variance as E[x^2] - E[x]^2 in float32, which loses precision as
    the mean grows against the spread: at a mean of 30 standard deviations its output is 8e-4 off, PyTorch's 2e-6."""

    def execute(self, x):
        dims = list(range(-len(self.normalized_shape), 0))
        centred = x - x.mean(dims=dims, keepdims=True)
        scale = 1 / jt.sqrt(centred.sqr().mean(dims=dims, keepdims=True) + self.eps)
        return centred * scale * self.weight + self.bias


def draw_initial_weights(module):
    """Every weight and bias of module's convolutions and normalisation layers from yolocore.init's seeded
    generator, in module order: the same seed gives both trees the same weights. init_rules, a dict of
    {parameter path below the module: rule} on any module, overrides the defaults."""
    modules = [(prefix, module_kind(m), {name: tuple(getattr(m, name).shape) for name in ("weight", "bias")
                                         if getattr(m, name, None) is not None}, getattr(m, "init_rules", {}))
               for prefix, m in module.named_modules()]
    parameters = {k: p for k, p in module.named_parameters() if not k.endswith(BUFFERS)}
    values = initial.initial_weights(modules, parameters)
    # No jt.no_grad() around assign, unlike torch.no_grad() around copy_: under it the parameter would stop its
    # gradient for good.
    for name, value in values.items():
        parameters[name].assign(jt.array(value))


def module_kind(m):
    if isinstance(m, nn.Conv2d):
        return "conv"
    return "norm" if isinstance(m, (BatchNorm2d, nn.LayerNorm)) else None


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
