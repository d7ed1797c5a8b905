"""Jittor-only layers and functions that stand in for PyTorch's where Jittor's own differ in behaviour or numerics.
The mirrored files use them where the PyTorch tree uses torch's (nn.BatchNorm2d -> BatchNorm2d), so a diff of twin
files shows framework calls only. Each says why Jittor's own would not do and names the test that found it."""
import jittor as jt
import jittor.nn as nn


def unsaved_attribute(name):
    """A Var attribute outside parameters() and state_dict(), like a plain tensor attribute in PyTorch: Jittor
    registers every Var attribute except those whose names start with '_'.
    Found by tests/parity/test_parity_model_loss.py::test_parameter_counts_keys_and_shapes_equal (stride is no key)."""
    private = "_" + name
    return property(lambda self: getattr(self, private), lambda self, value: setattr(self, private, value))


def channel_sum(x):
    """(N, C, H, W) -> (C,) in three short passes (over W, then H, then N). Jittor's CPU float32 reduction adds in
    one long pass: over the 409,600 values of a channel (batch 16 at imgsz 320) its sum is off by 1e-4 relative,
    three passes of at most a few hundred values keep it near 1e-7.
    Found by tests/parity/test_parity_model_loss.py::test_train_mode_batchnorm_and_its_gradient_agree."""
    return x.sum(3).sum(2).sum(0)


def clip_grad_norm(optimizer, max_norm):
    """torch.nn.utils.clip_grad_norm_ over the optimizer's trained parameters: every gradient scaled by
    min(1, max_norm / (norm + 1e-6)), the 2-norm of all gradients together. Jittor's optimizer.clip_grad_norm sums
    the squares of all gradients in one float32 pass: over a yolov5n's 1.9M it came out 3e-3 low, so every clipped
    step was 0.3 % larger than PyTorch's. Here each gradient's squares are summed in float64, and so are the sums.
    Found by tests/parity/test_parity_clip.py::test_both_trees_clip_real_size_gradients_alike."""
    grads = [g for group in optimizer.param_groups for p, g in zip(group["params"], group["grads"])
             if not p.is_stop_grad()]
    total = jt.concat([g.float64().sqr().sum().reshape(1) for g in grads]).sum().sqrt().float32()
    coef = jt.minimum(max_norm / (total + 1e-6), 1.0)
    for g in grads:
        g.update(g * coef)


class TrainNorm(jt.Function):
    """Train-mode batch normalisation with its gradient written out, as PyTorch's kernel computes it. Jittor's
    automatic gradient of the same expression took 3.4x as long (45 against 13 ms fwd+bwd on a (16, 16, 160, 160)
    map); written out, a yolov5n training step (imgsz 320, batch 16) takes 500 instead of 620 ms.
    sync: mean and variance over every process's equal batch, and the gradient of the sum of every process's loss,
    as an all-reduce in the forward pass implies.
    Found by benchmarks/bench_frameworks.py (Jittor's yolov5n step 1.72x PyTorch's); held to PyTorch's gradients by
    tests/parity/test_parity_model_loss.py::test_train_mode_batchnorm_and_its_gradient_agree."""

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
    sync (set by --sync-bn under mpirun): the statistics are means over every process's equal batch.
    Found by tests/parity/test_parity_model_loss.py::test_train_outputs_features_and_running_stats_agree."""

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
    the mean grows against the spread: at a mean of 30 standard deviations its output is 8e-4 off, PyTorch's 2e-6.
    Found by tests/parity/test_parity_fgd.py::test_the_gcblock_layernorm_agrees_whatever_the_mean."""

    def execute(self, x):
        dims = list(range(-len(self.normalized_shape), 0))
        centred = x - x.mean(dims=dims, keepdims=True)
        scale = 1 / jt.sqrt(centred.sqr().mean(dims=dims, keepdims=True) + self.eps)
        return centred * scale * self.weight + self.bias


class MaxPool2d(nn.Module):
    """torch.nn.MaxPool2d. Jittor's refuses maps not larger than the kernel (SPPF's 5x5 pool sees 2x2 maps at
    imgsz 64), so the -inf border PyTorch implies is padded explicitly and the pool itself runs unpadded.
    Found by tests/parity/test_parity_model_loss.py::test_eval_outputs_agree (64x96 images: SPPF sees 2x3 maps)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.padding = padding
        self.pool = nn.MaxPool2d(kernel_size, stride, 0)

    def execute(self, x):
        p = self.padding
        return self.pool(nn.pad(x, (p, p, p, p), value=float("-inf")) if p else x)


def anchors_in_strides(anchors, stride):
    """Anchors in pixels (nl, na, 2), as numpy, in units of their level's stride. numpy divides: Jittor's division
    rounds some quotients a few units in the last place off (10 / 8 gave 1.2499999), and the anchors, which never
    train, would keep that step from the PyTorch tree's for the whole run.
    Found by tests/parity/test_parity_train.py::test_lockstep_training_gives_the_same_losses_and_weights (setup_both
    checks both trees start from the same anchors to the bit)."""
    return jt.array(anchors / stride.reshape(-1, 1, 1))


def log1p(t):
    """log(1 + t) for t in [0, 1] to float32 precision: Jittor has no log1p, and 1 + t rounds t away below 6e-8.
    Found, with BCEWithLogitsLoss, by
    tests/parity/test_parity_model_loss.py::test_the_bce_of_each_tree_keeps_confident_logits."""
    series = t / 9  # t - t^2/2 + ... + t^9/9 by Horner's rule: below t = 0.25 it is log1p to 4e-7
    for k in range(8, 0, -1):
        series = t * (1 / k - series)
    return jt.ternary(t < 0.25, series, (1 + t).log())


class BCEWithLogitsLoss(nn.Module):
    """torch.nn.BCEWithLogitsLoss with pos_weight and reduction 'mean' or 'none'. Jittor's own differentiates
    log(exp(-m) + exp(-x - m)), which rounds away a confident prediction's gradient: for a 0 target it was 0 below
    logit -16.6 and up to 33 % off from there to -12, where PyTorch gives sigmoid(x). Most objectness and class
    targets are 0, and long trainings can drive their logits that far.
    Found by tests/parity/test_parity_model_loss.py::test_the_bce_of_each_tree_keeps_confident_logits."""

    def __init__(self, pos_weight, reduction="mean"):
        super().__init__()
        self.pos_weight, self.reduction = pos_weight, reduction

    def execute(self, pred, true):
        log_weight = (self.pos_weight - 1) * true + 1
        # For a 0 target and a negative logit the first two terms cancel, and the gradient of the last is sigmoid(x)
        # to float32 precision: no 1 - (1 - sigmoid(x)) rounds it away.
        loss = (1 - true) * pred + log_weight * jt.clamp(-pred, min_v=0) + log_weight * log1p((-pred.abs()).exp())
        return loss.mean() if self.reduction == "mean" else loss
