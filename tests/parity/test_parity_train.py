"""Lockstep training: both trees' train.py build a run from the same options, start from the same weights (the
same seed draws them) and step through the same batches (warmup, gradient accumulation, clipping, EMA), in train
and in KD mode. Their losses, weights and EMA weights must stay together; a drift means a recipe difference, not
noise.

The runs use a tenth of the recipe's learning rates. At full rates the first warmup steps of these tiny models
amplify float32 rounding: PyTorch against itself, with its weights perturbed by 1e-7, drifts by as much as
Jittor does (KD losses 0.4% apart after 3 epochs, some weights' movement 70% apart). Every path of the recipe
still runs at the smaller rates, where rounding stays rounding."""
# isort: off
import YOLOv5Jittor  # noqa: F401  (sets jittor's CPU build flags, which must be in place before jittor loads)
import jittor as jt  # noqa: F401
# isort: on
import numpy as np
import pytest
import torch
import yaml

from yolocore.data.synthetic import make_synthetic_dataset
from yolocore.training import loop
from yolocore.training.recipe import warmup, warmup_iterations
from YOLOv5Jittor import train as jt_train
from YOLOv5Jittor.utils.framework import state_dict_to_numpy as jt_state_dict_to_numpy
from YOLOv5Pytorch import train as torch_train
from YOLOv5Pytorch.models.yolo import Model as TorchModel
from YOLOv5Pytorch.utils.checkpoint import save_checkpoint as torch_save_checkpoint
from YOLOv5Pytorch.utils.framework import init_seeds as torch_init_seeds
from YOLOv5Pytorch.utils.framework import state_dict_to_numpy as torch_state_dict_to_numpy

pytestmark = pytest.mark.slow  # both trees train several epochs in lockstep

EPOCHS = 5  # 2 batches each: 10 iterations inside warmup, so the accumulation grows from 1 to 2


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(make_synthetic_dataset(tmp_path_factory.mktemp("syn"), n_train=16, n_val=8, imgsz=128, seed=3))


@pytest.fixture(scope="module")
def hyp(tmp_path_factory):
    values = yaml.safe_load(open(torch_train.TREE / "hyp.scratch-low.yaml"))
    # kd_weight 1: FGD's gradient then outweighs detection's, so a KD difference between the trees shows
    values.update(lr0=values["lr0"] / 10, warmup_bias_lr=values["warmup_bias_lr"] / 10, kd_weight=1.0)
    path = tmp_path_factory.mktemp("hyp") / "hyp.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A yolov5n teacher with random weights and non-trivial BatchNorm statistics, as a PyTorch .pt: the Jittor
    tree reads the same file."""
    torch_init_seeds(5)
    model = TorchModel("yolov5n.yaml", nc=5)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    names = ["airplane", "ship", "storage-tank", "tennis-court", "small-vehicle"]
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    torch_save_checkpoint({"model": model.state_dict(), "yaml": model.yaml, "nc": 5, "names": names}, path)
    return str(path)


def setup_both(tmp_path, data, hyp, *args):
    """Both trees' runs from the same options and seed, checked to start from the same weights, to the bit: the
    student (its AutoAnchor anchors too), its EMA and the FGD modules."""
    argv = ["--data", data, "--hyp", hyp, "--imgsz", "64", "--batch-size", "8", "--workers", "0", "--epochs", "30",
            "--seed", "11", "--noamp", *args]  # --noamp: float32 in both trees, the PyTorch KD teacher included
    torch_run = loop.setup(torch_train.parse_opt([*argv, "--project", str(tmp_path / "torch")]), torch_train)
    jt_run = loop.setup(jt_train.parse_opt([*argv, "--project", str(tmp_path / "jittor")]), jt_train)
    for part in (lambda run: run.model, lambda run: run.ema.ema, lambda run: run.fgd):
        if part(torch_run) is not None:
            expected = torch_state_dict_to_numpy(part(torch_run).state_dict())
            for k, v in jt_state_dict_to_numpy(part(jt_run).state_dict()).items():
                np.testing.assert_array_equal(v, expected[k], err_msg=k)
    return torch_run, jt_run


def test_the_hyps_nominal_batch_sets_both_trees_accumulation(tmp_path, data, hyp):
    values = dict(yaml.safe_load(open(hyp)), nbs=16)
    small_nbs = tmp_path / "hyp_nbs16.yaml"
    small_nbs.write_text(yaml.safe_dump(values))
    torch_run, jt_run = setup_both(tmp_path, data, str(small_nbs), "--cfg", "yolov5n.yaml")
    assert jt_run.accumulate == torch_run.accumulate == 2  # nbs 16 / batch 8, not YOLOv5's 64 / 8


def test_a_perturbed_run_starts_both_trees_a_rounding_step_from_the_plain_start(tmp_path, data, hyp):
    plain = copy_state(setup_both(tmp_path / "plain", data, hyp, "--cfg", "yolov5n.yaml")[0].model)
    torch_run, _ = setup_both(tmp_path / "perturbed", data, hyp, "--cfg", "yolov5n.yaml", "--perturb", "1e-7")
    perturbed, changed, total = copy_state(torch_run.model), 0, 0
    for k, v in perturbed.items():
        if k.endswith("anchors") or not np.issubdtype(v.dtype, np.floating):
            np.testing.assert_array_equal(v, plain[k], err_msg=k)
            continue
        np.testing.assert_allclose(v, plain[k], rtol=1e-6, atol=0, err_msg=k)
        changed, total = changed + int((v != plain[k]).sum()), total + v.size
    assert changed > total / 2
    np.testing.assert_array_equal(copy_state(torch_run.ema.ema)["model.0.conv.weight"],
                                  perturbed["model.0.conv.weight"])


def copy_state(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def assert_states_close(torch_module, jt_module, initial, what):
    """Compared on how far training moved each tensor. Float32 noise: p - lr * g rounds at ~1e-7 of |p| per step
    (all a BatchNorm weight near 1 moves in a few warmup steps), and near-cancelling gradient sums of a few head
    convs differ by up to ~3% of their small movement after 8 steps. A recipe difference (a group's lr, momentum,
    decay, clipping, EMA) shifts whole groups by 10% or more."""
    actual = {k: v.numpy() for k, v in jt_module.state_dict().items()}
    error, total = 0.0, 0.0
    for k, v in torch_module.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        expected = v.detach().numpy()
        moved = np.abs(expected - initial[k]).max()
        # 1e-12: a GcBlock's softmax logit bias has an exactly zero gradient, so it moves by rounding alone
        floor = 1e-6 * np.abs(expected).max() + 1e-12
        assert np.abs(actual[k] - expected).max() <= 0.05 * moved + floor, f"{what} {k}"
        error += float(((actual[k] - expected) ** 2).sum())
        total += float(((expected - initial[k]) ** 2).sum())
    relative = (error / total) ** 0.5 if total else float("inf")
    assert relative < 1e-2, f"{what}: relative error of the movement {relative}"


def test_the_run_exercises_warmup_accumulation_and_several_steps():
    hyp = {"warmup_epochs": 3.0, "warmup_momentum": 0.8, "momentum": 0.937, "warmup_bias_lr": 0.1}
    nw = warmup_iterations(hyp, 2)
    accumulations = [warmup(ni, nw, hyp, 0.01, 8)[0] for ni in range(2 * EPOCHS)]
    assert accumulations[0] == 1 and accumulations[-1] == 2


@pytest.mark.parametrize("mode", ["train", "KD"])
def test_lockstep_training_gives_the_same_losses_and_weights(tmp_path, data, hyp, teacher, narrow_cfg, mode):
    args = ["--cfg", "yolov5n.yaml"] if mode == "train" else ["--mode", "KD", "--cfg", narrow_cfg, "--teacher", teacher]
    torch_run, jt_run = setup_both(tmp_path, data, hyp, *args)
    initial = copy_state(torch_run.model)
    initial_fgd = copy_state(torch_run.fgd) if mode == "KD" else None
    frozen = {"torch": copy_state(torch_run.teacher), "jittor": jt_state_dict_to_numpy(jt_run.teacher.state_dict())} \
        if mode == "KD" else None
    torch_losses, jt_losses = [], []
    for epoch in range(EPOCHS):
        torch_losses.append(loop.train_one_epoch(torch_run, epoch, torch_train))
        jt_losses.append(loop.train_one_epoch(jt_run, epoch, jt_train))
    torch_losses, jt_losses = np.array(torch_losses), np.array(jt_losses)
    assert torch_losses.shape == (EPOCHS, 3 if mode == "train" else 8)
    np.testing.assert_allclose(jt_losses, torch_losses, rtol=2e-3, atol=1e-6)
    assert jt_run.last_opt_step == torch_run.last_opt_step == 2 * EPOCHS - 1
    assert jt_run.ema.updates == torch_run.ema.updates >= 6
    assert_states_close(torch_run.model, jt_run.model, initial, "model")
    assert_states_close(torch_run.ema.ema, jt_run.ema.ema, initial, "ema")
    if mode == "KD":
        assert_states_close(torch_run.fgd, jt_run.fgd, initial_fgd, "fgd")
        # the teacher neither learns nor updates its BatchNorm statistics, in either tree
        for tree, state in (("torch", copy_state(torch_run.teacher)),
                            ("jittor", jt_state_dict_to_numpy(jt_run.teacher.state_dict()))):
            for k, v in state.items():
                np.testing.assert_array_equal(v, frozen[tree][k], err_msg=f"{tree} teacher {k}")
        assert not torch_run.teacher.training and not jt_run.teacher.is_training()
    assert not np.allclose(copy_state(torch_run.model)["model.0.conv.weight"], initial["model.0.conv.weight"])


def test_lockstep_after_warmup(tmp_path, data, hyp, teacher, narrow_cfg):
    """The long runs spend all but their first 3 epochs past warmup, which the test above never leaves: there the
    epoch's lr comes from the schedule alone, accumulation is at the nominal batch, the EMA has slowed to its
    late decay and the FGD weight follows kd_weightf. Epochs 50-51 of a 300-epoch KD run, with the EMA as far
    along as an NWPU run's at epoch 50. At a hundredth of the recipe's lr: past warmup every step takes the full
    rate, and at a tenth the runs part through rounding within three epochs, as runs of either tree do. Even at a
    hundredth rounding grows fast: on one CPU (AMD EPYC) the trees' weights were 0.4 % of their movement apart per
    parameter group after two epochs, 2.7 % after four (single tensors 13 %), so two epochs it is."""
    values = yaml.safe_load(open(hyp))
    values.update(lr0=values["lr0"] / 10, kd_weightf=0.5)
    late_hyp = tmp_path / "hyp_late.yaml"
    late_hyp.write_text(yaml.safe_dump(values))
    torch_run, jt_run = setup_both(tmp_path, data, str(late_hyp), "--mode", "KD", "--cfg", narrow_cfg,
                                   "--teacher", teacher, "--epochs", "300")
    first = 50
    assert first * len(torch_run.train_loader) >= warmup_iterations(values, len(torch_run.train_loader))
    for run in (torch_run, jt_run):
        run.ema.updates = 400
        run.last_opt_step = first * len(run.train_loader) - 1
    initial, initial_fgd = copy_state(torch_run.model), copy_state(torch_run.fgd)
    initial_ema = copy_state(torch_run.ema.ema)
    torch_losses, jt_losses, lrs = [], [], []
    for epoch in range(first, first + 2):
        torch_losses.append(loop.train_one_epoch(torch_run, epoch, torch_train))
        jt_losses.append(loop.train_one_epoch(jt_run, epoch, jt_train))
        lrs.append([[g["lr"] for g in run.optimizer.param_groups] for run in (torch_run, jt_run)])
    np.testing.assert_allclose(jt_losses, torch_losses, rtol=2e-3, atol=1e-6)
    lrs = np.array(lrs)
    np.testing.assert_allclose(lrs[:, 1], lrs[:, 0], rtol=1e-12)
    assert np.all(np.diff(lrs[:, 0, 0]) < 0), "the schedule lowers the lr every epoch"
    assert jt_run.accumulate == torch_run.accumulate == 8  # NBS 64 / batch 8
    assert jt_run.last_opt_step == torch_run.last_opt_step
    assert jt_run.ema.updates == torch_run.ema.updates > 400
    assert_states_close(torch_run.model, jt_run.model, initial, "model")
    assert_states_close(torch_run.ema.ema, jt_run.ema.ema, initial_ema, "ema")
    assert_states_close(torch_run.fgd, jt_run.fgd, initial_fgd, "fgd")


def test_optimizer_groups_agree(tmp_path, data, hyp, teacher, narrow_cfg):
    """Weight decay and per-group settings act too slowly to show in a few lockstep steps: compare them directly."""
    torch_run, jt_run = setup_both(tmp_path, data, hyp, "--mode", "KD", "--cfg", narrow_cfg, "--teacher", teacher)
    torch_groups, jt_groups = torch_run.optimizer.param_groups, jt_run.optimizer.param_groups
    assert len(torch_groups) == len(jt_groups) == 3
    for t, j in zip(torch_groups, jt_groups):
        assert sorted(p.numel() for p in t["params"]) == sorted(int(p.numel()) for p in j["params"])
        for key in ("lr", "momentum", "weight_decay", "nesterov"):
            assert j[key] == pytest.approx(t[key]), key
    assert [g["weight_decay"] > 0 for g in torch_groups] == [False, True, False]
