"""study.py --gpu's options and its split of the cores (the whole study runs in tests/e2e/test_gpu_study.py)."""
import pytest

from yolocore.study import gpu
from yolocore.study.runner import parse_opt


def test_the_gpu_preset_is_the_full_protocol_with_a_calibration_run_cached_and_validated_every_10_epochs():
    opt = parse_opt(["--gpu"])
    assert (opt.imgsz, opt.batch_size, opt.epochs, opt.teacher_cfg, opt.student_cfg) == (
        512, 32, 150, "yolov5s.yaml", "yolov5n.yaml")
    assert opt.runs == ["teacher", "student", "student_rerun", "student_fgd"]
    assert (opt.cache, opt.val_period, opt.workers) == ("ram", 10, None)  # workers: split per phase
    assert parse_opt(["--gpu", "--workers", "0", "--val-period", "1"]).workers == 0, "a given 0 is kept"
    assert (parse_opt([]).workers, parse_opt([]).val_period) == (8, 1)


def test_pack_without_gpu_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_opt(["--pack", "out"])
    assert "--pack goes with --gpu" in capsys.readouterr().err


def test_cores_are_split_among_the_runs_side_by_side():
    assert gpu.split_cores(16, 3) == (4, 5)  # 3 main threads + 3 x 4 workers = 15 of 16 cores
    assert gpu.split_cores(16, 1) == (15, 16)
    assert gpu.split_cores(2, 3) == (1, 1)


def test_each_child_trains_one_kind_with_the_study_protocol_spelt_out():
    opt = parse_opt(["--gpu", "--data", "d.yaml", "--student-width", "0.125", "--noamp", "--device", "0"])
    argv = gpu.child_argv(opt, "student_rerun", 4)
    assert argv[argv.index("--runs") + 1] == "student_rerun" and argv[argv.index("--workers") + 1] == "4"
    assert argv[argv.index("--val-period") + 1] == "10" and argv[argv.index("--cache") + 1] == "ram"
    assert argv[argv.index("--student-width") + 1] == "0.125" and "--noamp" in argv
    assert "--teacher" not in argv and "--gpu" not in argv, "a child trains; it does not schedule"
    child = parse_opt(argv)
    assert (child.data, child.epochs, child.imgsz, child.device, child.gpu) == ("d.yaml", 150, 512, "0", False)
