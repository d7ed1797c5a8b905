"""Mixed precision on the CPU (--amp: bfloat16 autocast where the CPU has native bfloat16) and the KD teacher's low
precision: what is detected, what float32 runs keep, and a few real KD steps under CPU autocast."""
import pytest
import torch

from yolocore.data.synthetic import make_synthetic_dataset
from yolocore.training import loop
from YOLOv5Pytorch import train
from YOLOv5Pytorch.models.common import Conv
from YOLOv5Pytorch.models.yolo import Model
from YOLOv5Pytorch.utils import framework
from YOLOv5Pytorch.utils.checkpoint import save_checkpoint

CPU = torch.device("cpu")
NATIVE_BF16 = framework._cpu_native_bfloat16()


@pytest.mark.parametrize("flags, native", [(set(), False), ({"avx2", "avx512f", "fma"}, False),
                                           ({"avx512f", "avx512_bf16"}, True), ({"amx_tile", "amx_bf16"}, True)])
def test_cpu_bfloat16_is_detected_from_the_flags(monkeypatch, flags, native):
    monkeypatch.setattr(framework, "_cpu_flags", lambda: flags)
    assert framework._cpu_native_bfloat16() is native
    assert framework.mixed_precision(CPU, amp=True) is native
    assert framework.teacher_precision(CPU, amp=True) == (torch.bfloat16 if native else torch.float32)
    assert framework.teacher_precision(CPU) == torch.float32  # a float32 run's teacher is float32 too
    with framework.autocast(CPU, True):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == (torch.bfloat16 if native else torch.float32)


def test_the_cpu_flags_are_read_from_proc_cpuinfo():
    assert "fpu" in framework._cpu_flags() or not framework._cpu_flags()  # x86 lists fpu; elsewhere maybe nothing


@pytest.mark.parametrize("flags", [set(), {"avx512_bf16"}])
def test_float32_unless_asked_on_the_cpu_and_always_with_noamp(monkeypatch, flags):
    monkeypatch.setattr(framework, "_cpu_flags", lambda: flags)
    assert not framework.mixed_precision(CPU)
    assert not framework.mixed_precision(CPU, noamp=True)
    assert not framework.grad_scaler(CPU, True).is_enabled()  # bfloat16 needs no loss scaling
    with framework.autocast(CPU, framework.mixed_precision(CPU, noamp=True)):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_cuda_keeps_float16_unless_noamp():
    cuda = torch.device("cuda")
    assert framework.mixed_precision(cuda) and not framework.mixed_precision(cuda, noamp=True)
    assert (framework.teacher_precision(cuda, amp=True), framework.teacher_precision(cuda)) == (torch.float16,
                                                                                               torch.float32)


def test_amp_and_noamp_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        train.parse_opt(["--amp", "--noamp"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_teacher_features_skip_detect_and_come_back_in_float32():
    model = Model("yolov5n.yaml", nc=3).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x, feature_layers=[17, 20, 23])[1]
        calls = []
        model.model[-1].register_forward_hook(lambda *args: calls.append(1))
        feats = model.to(torch.bfloat16).features(x, [17, 20, 23])
    assert not calls, "the teacher's Detect head ran"
    assert [f.dtype for f in feats] == [torch.float32] * 3
    for f, e in zip(feats, expected):
        assert f.shape == e.shape and torch.allclose(f, e, rtol=0.1, atol=0.1)


@pytest.fixture(scope="module")
def kd_argv(tmp_path_factory):
    root = tmp_path_factory.mktemp("amp")
    data = make_synthetic_dataset(root / "data", n_train=8, n_val=4, imgsz=64, seed=2)
    teacher = Model("yolov5n.yaml", nc=5)
    save_checkpoint({"model": teacher.state_dict(), "yaml": teacher.yaml, "nc": 5,
                     "names": ["airplane", "ship", "storage-tank", "tennis-court", "small-vehicle"]},
                    root / "teacher.pt")
    return ["--data", str(data), "--imgsz", "64", "--batch-size", "4", "--workers", "0", "--epochs", "1",
            "--mode", "KD", "--teacher", str(root / "teacher.pt"), "--project", str(root / "runs"), "--noautoanchor"]


def kd_steps(argv, steps=2):
    """train.py KD steps of a fresh run: (the run, the dtypes FGDLoss saw: {"student": maps it received,
    "teacher": maps it received, "loss": what it returned})."""
    run = loop.setup(train.parse_opt(argv), train)
    seen = {"student": set(), "teacher": set(), "loss": set()}

    def inputs(module, args):
        seen["student"].update(f.dtype for f in args[0])
        seen["teacher"].update(f.dtype for f in args[1])

    run.parallel_fgd.register_forward_pre_hook(inputs)
    run.parallel_fgd.register_forward_hook(lambda module, args, out: seen["loss"].update(o.dtype for o in out))
    batches = iter(run.train_loader)
    for _ in range(steps):
        imgs, targets, _, _ = next(batches)
        loss, items = train.train_step(run, imgs, targets, run.hyp["kd_weight"])
        assert torch.isfinite(torch.tensor([loss, *items])).all()
        train.optimizer_step(run)
    return run, seen


@pytest.mark.skipif(not NATIVE_BF16, reason="needs a CPU with avx512_bf16 or amx_bf16")
def test_amp_trains_kd_steps_in_bfloat16_with_float32_weights_and_fgd_inputs(kd_argv):
    run, seen = kd_steps([*kd_argv, "--amp", "--name", "amp"])
    assert run.amp and next(run.teacher.parameters()).dtype == torch.bfloat16
    assert "AMP" in run.training["device"]
    # The student's maps come out of bfloat16 convolutions and FGDLoss casts them; the teacher's come cast already
    assert seen == {"student": {torch.bfloat16}, "teacher": {torch.float32}, "loss": {torch.float32}}
    for module in (run.model, run.ema.ema, run.fgd):
        assert {v.dtype for v in module.state_dict().values() if v.is_floating_point()} == {torch.float32}
    assert all(s["momentum_buffer"].dtype == torch.float32 for s in run.optimizer.state.values())


@pytest.mark.parametrize("flags", [[], ["--noamp"]], ids=["default", "noamp"])
def test_without_amp_the_teacher_and_everything_stay_float32(kd_argv, flags):
    """A float32 run's teacher is float32 too, even where the CPU has bfloat16: such runs stay comparable with the
    Jittor tree's."""
    run, seen = kd_steps([*kd_argv, *flags, "--name", "float32"], steps=1)
    assert not run.amp and "AMP" not in run.training["device"]
    assert next(run.teacher.parameters()).dtype == torch.float32
    assert seen == {"student": {torch.float32}, "teacher": {torch.float32}, "loss": {torch.float32}}


def test_strided_convolutions_train_in_float32_under_cpu_autocast():
    """oneDNN's bfloat16 backward of strided convolutions is slower than float32's: they leave autocast when it
    trains, and keep bfloat16 for inference (no_grad), where their forward gains."""
    strided, plain = Conv(8, 16, 3, 2), Conv(8, 16, 3, 1)
    x = torch.rand(2, 8, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (strided(x).dtype, plain(x).dtype) == (torch.float32, torch.bfloat16)
        with torch.no_grad():
            assert strided(x).dtype == torch.bfloat16
    assert strided(x).dtype == torch.float32
