"""The one-command study on tiny synthetic data: three runs (the teacher killed and resumed), the report and
its plots, a rerun that trains nothing, and the rerun student (CPU, about a minute)."""
import dataclasses
import json
import re

import pytest
import yaml

from yolocore.data.synthetic import make_synthetic_dataset
from yolocore.study import runner
from yolocore.study.runner import StudyLog
from yolocore.training import loop
from yolocore.training.checkpoints import read_checkpoint
from YOLOv5Pytorch import study

pytestmark = pytest.mark.slow  # whole (tiny) studies: several training runs each

RUNS = ("teacher", "student", "student_fgd")


def study_argv(data, project, *extra):
    return ["--data", str(data), "--imgsz", "64", "--batch-size", "8", "--epochs", "2", "--teacher-cfg",
            "yolov5n.yaml", "--student-cfg", "yolov5n.yaml", "--student-width", "0.125", "--device", "cpu",
            "--workers", "0", "--project", str(project), *extra]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), n_train=8, n_val=4, imgsz=128, seed=1)


@pytest.fixture(scope="module")
def project(tmp_path_factory, data):
    project = tmp_path_factory.mktemp("study")
    real = loop.train_one_epoch

    def killed_in_second_epoch(run, epoch, backend):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(run, epoch, backend)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "train_one_epoch", killed_in_second_epoch)
        with pytest.raises(KeyboardInterrupt):
            study.main(study_argv(data, project))
    study.main(study_argv(data, project))  # resumes the teacher, then trains both students
    return project


def test_study_trains_three_runs_and_writes_the_report(project):
    for name in RUNS:
        for f in ("results.csv", "per_class.csv", "weights/best.pt"):
            assert (project / name / f).is_file(), f"{name}/{f}"
    md = (project / "study.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:4]] == ["| teacher", "| student", "| FGD student"]
    assert "w 0.125" in rows[2] and "| KD |" in rows[3] and "CPU" in rows[1]
    assert "FGD student minus plain student" in md and "| storage-tank |" in md
    for png in ("map50_curves.png", "class_ap50.png"):
        assert (project / png).stat().st_size > 0
    runs = json.loads((project / "study.json").read_text())["runs"]
    assert runs["student_fgd"]["command"].startswith("python YOLOv5Pytorch/train.py --mode KD")
    assert "--resume" not in runs["teacher"]["command"]  # the command that trains it, not the one that resumed it
    teacher = read_checkpoint(project / "teacher" / "weights" / "last.pt")["training"]
    assert teacher["epochs"] == 2  # killed in its second epoch and resumed: each epoch counted once
    assert re.search(r" \| \d+ s \| CPU, ", rows[1]), rows[1]  # the time per epoch and the device
    assert (project / "teacher" / "results.csv").read_text().count("\n") == 3  # header and epochs 0, 1


def test_rerun_trains_nothing_and_a_missing_final_validation_is_redone(data, project, monkeypatch):
    def no_training(opt):
        raise AssertionError(f"retrained {opt.name}")

    monkeypatch.setattr(study, "TREE", dataclasses.replace(study.TREE, train=no_training))
    (project / "student" / "per_class.csv").unlink()
    study.main(study_argv(data, project))
    assert (project / "student" / "per_class.csv").is_file()
    log = (project / "study.json").read_text()
    with pytest.raises(ValueError, match="epochs 2 \\(wanted 3\\)"):
        study.main(study_argv(data, project, "--epochs", "3"))
    assert (project / "study.json").read_text() == log  # refused before anything was written


def test_repeats_add_seeds_to_a_finished_study(data, project, monkeypatch):
    trained, real = [], study.TREE.train

    def recording(opt):
        trained.append(opt.name)
        return real(opt)

    monkeypatch.setattr(study, "TREE", dataclasses.replace(study.TREE, train=recording))
    study.main(study_argv(data, project, "--repeats", "2"))
    assert trained == ["student_seed1", "student_fgd_seed1"]  # the teacher and seed 0's pair are reused
    fgd_opt = yaml.safe_load((project / "student_fgd_seed1" / "opt.yaml").read_text())
    assert fgd_opt["seed"] == 1 and fgd_opt["teacher"].endswith("teacher/weights/best.pt")
    md = (project / "study.md").read_text()
    assert "| FGD student, seed 1 |" in md and "| student | 2 |" in md
    assert "FGD student minus plain student of the same seed, over 2 seeds" in md
    assert "students at seeds 0-1" in md


def test_runs_trains_only_the_chosen_runs(data, tmp_path):
    study.main(study_argv(data, tmp_path, "--runs", "student"))
    assert sorted(p.name for p in tmp_path.iterdir() if (p / "results.csv").is_file()) == ["student"]
    assert list(json.loads((tmp_path / "study.json").read_text())["runs"]) == ["student"]


def test_a_rerun_student_is_the_student_moved_by_rounding_and_is_paired_with_it(data, tmp_path):
    study.main(study_argv(data, tmp_path, "--runs", "student", "student_rerun"))
    plain, rerun = (yaml.safe_load((tmp_path / name / "opt.yaml").read_text()) for name in ("student", "student_rerun"))
    assert (plain["perturb"], rerun["perturb"]) == (0.0, 1e-7)
    assert {k: v for k, v in plain.items() if k not in ("perturb", "name", "save_dir")} == \
        {k: v for k, v in rerun.items() if k not in ("perturb", "name", "save_dir")}
    md = (tmp_path / "study.md").read_text()
    assert "| student again, weights moved by 1e-7 |" in md and "Rounding alone: plain student again" in md
    assert json.loads((tmp_path / "study.json").read_text())["runs"]["student_rerun"]["command"].endswith(
        "--perturb 1e-7 --name student_rerun")


def test_study_processes_side_by_side_keep_each_others_records(tmp_path):
    first, second = (StudyLog(tmp_path, "protocol", "title") for _ in range(2))  # both opened before any record
    first.record("teacher", "python train.py --name teacher")
    second.record("student", "python train.py --name student")
    assert sorted(json.loads((tmp_path / "study.json").read_text())["runs"]) == ["student", "teacher"]


def test_a_given_teacher_is_distilled_and_not_trained(data, project, tmp_path, monkeypatch):
    trained, real = [], study.TREE.train

    def recording(opt):
        trained.append(opt.name)
        return real(opt)

    monkeypatch.setattr(study, "TREE", dataclasses.replace(study.TREE, train=recording))
    teacher = str(project / "teacher" / "weights" / "best.pt")
    study.main(study_argv(data, tmp_path, "--teacher", teacher))
    assert trained == ["student", "student_fgd"]
    assert yaml.safe_load((tmp_path / "student_fgd" / "opt.yaml").read_text())["teacher"] == teacher
    md = (tmp_path / "study.md").read_text()
    assert f"The teacher, trained elsewhere: `{teacher}`" in md and "| FGD student |" in md


def test_the_cheap_protocol_trains_every_run_kind_and_reports_both_calibrations(tmp_path, monkeypatch):
    """--cheap at tiny settings: its synthetic data written on first use, the teacher, then the student, the FGD
    student and both calibration runs, validated once each, from cached images."""
    monkeypatch.setattr(runner, "CHEAP_DATA", dict(root=tmp_path / "syn", n_train=8, n_val=4, imgsz=128, seed=1))
    project = tmp_path / "cheap"
    study.main(["--cheap", "--imgsz", "64", "--batch-size", "8", "--epochs", "1", "--seed", "1", "--device", "cpu",
                "--workers", "0", "--project", str(project)])
    assert (tmp_path / "syn" / "synthetic.yaml").is_file()
    for name in runner.RUN_NAMES:
        assert (project / name / "per_class.csv").is_file(), name
    opt = yaml.safe_load((project / "student_fgd_rerun" / "opt.yaml").read_text())
    assert (opt["mode"], opt["perturb"], opt["seed"], opt["cache"], opt["noval"]) == ("KD", 1e-7, 1, "ram", True)
    for name in runner.RUN_NAMES:  # every run, the teacher too, takes the preset's nominal batch
        assert yaml.safe_load((project / name / "hyp.yaml").read_text())["nbs"] == 16, name
    md = (project / "study.md").read_text()
    assert md.startswith("# Study on synthetic") and "Cheap CPU protocol" in md
    assert "Rounding alone in KD mode: FGD student again from its weights moved by 1e-7, minus FGD student: " in md
