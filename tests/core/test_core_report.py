"""per_class.csv from the evaluator, the study report built from run folders, and the study's run planning
(no framework: run folders are written by hand)."""
import argparse
import csv
import json

import numpy as np
import pytest

from yolocore.config import ROOT, ConfigError, load_model_cfg, load_yaml, save_yaml
from yolocore.evaluation.coco import STAT_NAMES, CocoRecorder, read_coco_csv, save_coco
from yolocore.evaluation.validation import Evaluator, write_per_class_csv
from yolocore.study import compare
from yolocore.study import runner as study
from yolocore.study.report import load_run, seeded_name, write_report
from yolocore.training.checkpoints import write_pickle_checkpoint
from yolocore.training.recipe import results_row
from yolocore.training.record import add_epoch, describe_device, training_record
from yolocore.training.results import append_results

NAMES = ["a", "b", "c"]
HYP = ROOT / "YOLOv5Pytorch" / "hyp.scratch-low.yaml"


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_evaluator_writes_per_class_csv_and_keeps_its_return_values(tmp_path):
    # Two 64x64 images, no letterbox. Image 0: one 'a', one 'b'; image 1: two 'a'. Every 'a' is found, 'b' is
    # missed, 'c' never occurs.
    imgs = np.zeros((2, 3, 64, 64), np.uint8)
    targets = np.array([[0, 0, 0.25, 0.25, 0.2, 0.2], [0, 1, 0.75, 0.75, 0.2, 0.2],
                        [1, 0, 0.25, 0.75, 0.2, 0.2], [1, 0, 0.75, 0.25, 0.2, 0.2]], np.float32)
    a_boxes = [[[9.6, 9.6, 22.4, 22.4]], [[9.6, 41.6, 22.4, 54.4], [41.6, 9.6, 54.4, 22.4]]]
    detections = [np.array([[*b, 0.9, 0] for b in boxes]) for boxes in a_boxes]
    shapes = [((64, 64), ((1.0, 1.0), (0.0, 0.0)))] * 2
    evaluator = Evaluator(NAMES, plots=True, save_dir=tmp_path)
    evaluator.add_batch(imgs, targets, detections, ["0.jpg", "1.jpg"], shapes)
    (p, r, map50, map_), maps = evaluator.summary()
    assert map50 == pytest.approx(0.995 / 2) and map_ == pytest.approx(0.995 / 2)  # mean over 'a' and 'b'
    assert maps.shape == (3,)

    rows = read_rows(tmp_path / "per_class.csv")
    assert [row["class"] for row in rows] == NAMES
    a, b, c = rows
    assert (a["images"], a["instances"], b["images"], b["instances"], c["instances"]) == ("2", "3", "1", "1", "0")
    assert float(a["AP50"]) == pytest.approx(0.995) and float(a["R"]) == pytest.approx(1.0)
    assert float(b["AP50"]) == 0 and float(b["AP50-95"]) == 0
    assert c["P"] == c["R"] == c["AP50"] == c["AP50-95"] == ""  # undefined, not zero


def test_evaluator_without_plots_writes_nothing(tmp_path):
    evaluator = Evaluator(NAMES, plots=False, save_dir=tmp_path)
    evaluator.add_batch(np.zeros((1, 3, 64, 64)), np.zeros((0, 6)), [np.zeros((0, 6))], ["0.jpg"],
                        [((64, 64), ((1.0, 1.0), (0.0, 0.0)))])
    evaluator.summary()
    assert not (tmp_path / "per_class.csv").exists()


def fake_run(folder, map50s, per_class_ap50=None, mode="train", epochs=None, seed=0):
    """A run folder as train.py leaves it: results.csv (mAP50-95 = half the mAP50), opt.yaml, and
    per_class.csv when per_class_ap50 is given."""
    folder.mkdir(parents=True)
    for epoch, m in enumerate(map50s):
        append_results(folder / "results.csv", results_row(epoch, [0.1, 0.05, 0.02], [0.5, 0.4, m, m / 2, 0, 0, 0],
                                                          [0.01] * 3))
    save_yaml(folder / "opt.yaml", dict(cfg="yolov5n.yaml", mode=mode, epochs=epochs or len(map50s), imgsz=64,
                                        batch_size=8, seed=seed))
    if per_class_ap50 is not None:
        ap50 = np.array(per_class_ap50, float)
        write_per_class_csv(folder / "per_class.csv", NAMES, [5, 4, 0], [9, 6, 0], ap50 * 0 + 0.5, ap50 * 0 + 0.4,
                            ap50, ap50 / 2, [0, 1])
    return folder


def test_report_table_gain_and_plots(tmp_path):
    fake_run(tmp_path / "teacher", [0.2, 0.6, 0.5], [0.8, 0.6])
    fake_run(tmp_path / "student", [0.1, 0.3], [0.4, 0.2])
    fake_run(tmp_path / "student_fgd", [0.1, 0.4], [0.5, 0.3], mode="KD")
    (tmp_path / "study.json").write_text(json.dumps({"protocol": "Tiny protocol.", "runs": {"student": {
        "command": "python YOLOv5Pytorch/train.py --name student", "device": "CPU, 2 cores",
        "segments": [{"epochs": 1, "seconds": 30}, {"epochs": 1, "seconds": 50}]}}}))
    md = write_report(tmp_path, tmp_path / "out").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    teacher, student, fgd = rows[1:4]
    assert "| 3/3 | 2 |" in teacher and "**70.0**" in teacher  # best.pt's AP50s: mean of 0.8 and 0.6
    assert "**30.0**" in student and "40 s" in student and "CPU, 2 cores" in student
    assert "| KD |" in fgd and "**40.0**" in fgd
    assert "+10.0 mAP50, +5.0 mAP50-95" in md and "higher on 2 of 2 classes" in md
    assert "| a | 5 | 9 | 80.0 | 40.0 | 50.0 |" in md and "| c | 0 | 0 | n/a | n/a | n/a |" in md
    assert "Tiny protocol." in md and "python YOLOv5Pytorch/train.py --name student" in md
    for png in ("map50_curves.png", "class_ap50.png"):
        assert (tmp_path / "out" / png).stat().st_size > 0


def test_the_device_says_when_it_trains_in_mixed_precision():
    plain = describe_device("cpu")
    assert plain.startswith("CPU, ") and describe_device("cpu", amp=True) == f"{plain}, AMP"
    assert describe_device("cpu", processes=2, amp=True) == f"2 x {plain}, AMP"


def test_a_hand_run_reports_the_time_and_device_its_checkpoint_recorded(tmp_path):
    first = training_record(None, "CPU, 2 cores (x)")
    add_epoch(first, 30.0)
    later = training_record({"training": first}, "NVIDIA H200")  # resumed on another machine
    add_epoch(later, 20.0)
    assert later == {"device": "CPU, 2 cores (x), then NVIDIA H200", "epochs": 2, "seconds": 50.0}
    assert training_record({"training": later}, "NVIDIA H200")["device"] == later["device"]
    assert training_record({"epoch": 3}, "GPU") == {"device": "GPU", "epochs": 0, "seconds": 0.0}  # older tree

    run = fake_run(tmp_path / "student", [0.1, 0.3])
    (run / "weights").mkdir()
    write_pickle_checkpoint({"epoch": 1, "training": later}, run / "weights" / "last.pkl")
    fake_run(tmp_path / "student_fgd", [0.1, 0.4], mode="KD")  # no checkpoint, no study.json: nothing to tell
    md = write_report(tmp_path).read_text()
    student, fgd = [line for line in md.splitlines() if line.startswith("| ")][1:3]
    assert student.endswith("| 25 s | CPU, 2 cores (x), then NVIDIA H200 |")
    assert fgd.endswith("| n/a | n/a |")


def test_report_over_seeds_pairs_each_fgd_student_with_the_plain_student_of_its_seed(tmp_path):
    fake_run(tmp_path / "teacher", [0.6], [0.8, 0.6])
    for seed, plain, fgd in ((0, 0.25, None), (1, 0.30, 0.34), (2, 0.20, 0.30)):  # seed 0's FGD run is missing
        fake_run(tmp_path / seeded_name("student", seed, 0), [plain], [plain, plain], seed=seed)
        if fgd is not None:
            fake_run(tmp_path / seeded_name("student_fgd", seed, 0), [fgd], [fgd, fgd], mode="KD", seed=seed)
    fake_run(tmp_path / "student_fgd_kd0.1", [0.9], [0.9, 0.9], mode="KD")  # not a run of the study
    fake_run(tmp_path / "student_fgd_seed3", [0.8], mode="KD", seed=3, epochs=2)  # still training: no mean, no pair
    fake_run(tmp_path / "student_seed3", [0.1], [0.1, 0.1], seed=3)
    md = write_report(tmp_path).read_text()
    labels = [line.split(" | ")[0] for line in md.splitlines() if line.startswith("| ")]
    assert labels[1:9] == ["| teacher", "| student, seed 0", "| student, seed 1", "| FGD student, seed 1",
                           "| student, seed 2", "| FGD student, seed 2", "| student, seed 3", "| FGD student, seed 3"]
    assert "| student | 4 | 21.2 ± 4.3 | 10.6 ± 2.1 |" in md and "| FGD student | 2 | 32.0 ± 2.0 |" in md
    assert "over 2 seeds: +7.0 ± 3.0 mAP50 (per seed: +4.0, +10.0), +3.5 ± 1.5 mAP50-95" in md
    assert "| student (mean of 4 seeds) | FGD student (mean of 2 seeds) |" in md
    assert "| a | 5 | 9 | 80.0 | 21.2 | 32.0 |" in md and "90.0" not in md
    assert "Rounding alone" not in md


def test_report_pairs_each_rerun_with_the_plain_student_of_its_seed(tmp_path):
    for seed, plain, rerun in ((0, 0.25, 0.27), (1, 0.30, 0.26), (2, 0.20, None)):
        fake_run(tmp_path / seeded_name("student", seed, 0), [plain], [plain, plain], seed=seed)
        if rerun is not None:
            fake_run(tmp_path / seeded_name("student_rerun", seed, 0), [rerun], [rerun, rerun], seed=seed)
    md = write_report(tmp_path).read_text()
    labels = [line.split(" | ")[0] for line in md.splitlines() if line.startswith("| ")]
    assert labels[1:6] == ["| student, seed 0", "| student again, weights moved by 1e-7, seed 0", "| student, seed 1",
                           "| student again, weights moved by 1e-7, seed 1", "| student, seed 2"]
    assert ("Rounding alone: plain student again from its weights moved by 1e-7, minus plain student of the same "
            "seed, over 2 seeds: -1.0 ± 3.0 mAP50 (per seed: +2.0, -4.0), -0.5 ± 1.5 mAP50-95") in md
    assert "FGD student minus" not in md


def test_comparison_of_two_studies_gives_means_over_seeds_and_their_difference(tmp_path):
    for study_name, teacher, students in (("pytorch", 0.60, (0.30, 0.20)), ("jittor", 0.58, (0.26, 0.18))):
        project = tmp_path / study_name
        fake_run(project / "teacher", [teacher], [teacher, teacher])
        for seed, m in enumerate(students):
            fake_run(project / seeded_name("student", seed, 0), [m], [m, m], seed=seed)
    fake_run(tmp_path / "pytorch" / "student_fgd", [0.34], [0.34, 0.34], mode="KD")
    fake_run(tmp_path / "jittor" / "student_fgd", [0.9], mode="KD", epochs=3)  # still training
    # The teachers' times: one from the study of an older tree, one from the checkpoint's record.
    (tmp_path / "pytorch" / "study.json").write_text(json.dumps({"runs": {"teacher": {
        "device": "CPU", "segments": [{"epochs": 1, "seconds": 30}]}}}))
    (tmp_path / "jittor" / "teacher" / "weights").mkdir()
    write_pickle_checkpoint({"training": {"device": "GPU", "epochs": 1, "seconds": 45.0}},
                            tmp_path / "jittor" / "teacher" / "weights" / "last.pkl")
    md = compare.write_comparison([tmp_path / "pytorch", tmp_path / "jittor"]).read_text()
    rows = {line.split(" | ")[0]: line for line in md.splitlines() if line.startswith("| ")}
    assert rows["| teacher"] == "| teacher | 60.0 | 58.0 | 30.0 | 29.0 | -2.0 | -1.0 | 30 s | 45 s | 1.50x |"
    # standard errors 5.0 and 4.0 over two seeds each; the difference's is their hypotenuse
    assert rows["| student"].startswith("| student | 25.0 ± 5.0 (2) | 22.0 ± 4.0 (2) |")
    assert rows["| student"].endswith("| -3.0 ± 6.4 | -1.5 ± 3.2 | n/a | n/a | n/a |")
    assert rows["| FGD student"] == "| FGD student | 34.0 | n/a | 17.0 | n/a | n/a | n/a | n/a | n/a | n/a |"
    assert "Devices: pytorch: CPU; jittor: GPU." in md
    assert (tmp_path / "compare_map50.png").stat().st_size > 0
    assert "compare_seeds" not in md and not (tmp_path / "compare_seeds.png").exists()  # no difference has two seeds
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no study runs"):
        compare.write_comparison([tmp_path / "pytorch", tmp_path / "empty"])


def test_kd_calibration_runs_pair_with_the_fgd_student_and_the_comparison_pairs_gains_by_seed(tmp_path):
    studies = {"pytorch": ((0.30, 0.34, 0.36), (0.20, 0.22, None), (0.25, 0.25, None)),  # plain, FGD, FGD again
               "jittor": ((0.31, 0.29, 0.30), (0.22, 0.20, 0.22), (0.24, None, None))}
    for name, seeds in studies.items():
        for seed, maps in enumerate(seeds):
            for kind, m in zip(("student", "student_fgd", "student_fgd_rerun"), maps):
                if m is not None:
                    fake_run(tmp_path / name / seeded_name(kind, seed, 0), [m], [m, m], seed=seed,
                             mode="train" if kind == "student" else "KD")
    md = write_report(tmp_path / "jittor").read_text()
    assert ("Rounding alone in KD mode: FGD student again from its weights moved by 1e-7, minus FGD student of the "
            "same seed, over 2 seeds: +1.5 ± 0.5 mAP50 (per seed: +1.0, +2.0)") in md
    assert "| FGD student again, weights moved by 1e-7, seed 1 |" in md
    md = compare.write_comparison([tmp_path / "pytorch", tmp_path / "jittor"]).read_text()
    paired = md.split("## Differences paired by seed")[1].split("## Per seed")[0]
    rows = [line for line in paired.splitlines() if line.startswith("| ")]
    assert rows[1:] == [
        "| FGD student minus plain student | pytorch | 3 | +2.0 ± 1.2 | +1.0 ± 0.6 | 2.6 | 1.3 |",
        "| FGD student minus plain student | jittor | 2 | -2.0 ± 0.0 | -1.0 ± 0.0 | 2.0 | 1.0 |",
        "| FGD student minus plain student | jittor − pytorch | 2 | -5.0 ± 1.0 | -2.5 ± 0.5 | 5.1 | 2.5 |",
        "| Rounding alone in KD mode: FGD student again from its weights moved by 1e-7, minus FGD student | pytorch | "
        "1 | +2.0 | +1.0 | 2.0 | 1.0 |",
        "| Rounding alone in KD mode: FGD student again from its weights moved by 1e-7, minus FGD student | jittor | "
        "2 | +1.5 ± 0.5 | +0.8 ± 0.2 | 1.6 | 0.8 |",
        "| Rounding alone in KD mode: FGD student again from its weights moved by 1e-7, minus FGD student | "
        "jittor − pytorch | 1 | -1.0 | -0.5 | 1.0 | 0.5 |"]
    rows = [line for line in md.split("## Per seed")[1].split("![")[0].splitlines() if line.startswith("| ")]
    assert rows == [
        "| seed | pytorch student | pytorch FGD | pytorch FGD again | jittor student | jittor FGD | jittor FGD again | "
        "pytorch FGD gain | jittor FGD gain | jittor − pytorch gain |",
        "| 0 | 15.0 | 17.0 | 18.0 | 15.5 | 14.5 | 15.0 | +2.0 | -1.0 | -3.0 |",
        "| 1 | 10.0 | 11.0 |  | 11.0 | 10.0 | 11.0 | +1.0 | -1.0 | -2.0 |",
        "| 2 | 12.5 | 12.5 |  | 12.0 |  |  | +0.0 |  |  |"]
    assert "![paired differences per seed](compare_seeds.png)" in md
    assert (tmp_path / "compare_seeds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_comparison_gives_ap_with_classes_merged_where_runs_have_it(tmp_path):
    """coco.csv of today's tree holds it; a run validated before it was added gets it from its json files."""
    plane = [[0, 10, 10, 110, 110], [1, 200, 200, 300, 300]]
    found = {"student": [[10, 10, 110, 110, 0.9, 0]],  # one of two: AP 51/101 either way
             "student_fgd": [[10, 10, 110, 110, 0.9, 0], [200, 200, 300, 300, 0.8, 0]]}  # both, one called a plane
    for name in ("pytorch", "jittor"):
        for seed in (0, 1):
            for kind, dets in found.items():
                run = fake_run(tmp_path / name / seeded_name(kind, seed, 0), [0.5], [0.5, 0.5], seed=seed,
                               mode="train" if kind == "student" else "KD")
                recorder = CocoRecorder(NAMES[:2])
                recorder.add("a.jpg", (400, 400), np.array(plane, float), np.array(dets, float))
                save_coco(recorder, run)
                if name == "jittor":  # as an older tree wrote it
                    figures = read_coco_csv(run / "coco.csv")
                    (run / "coco.csv").write_text(",".join(STAT_NAMES) + "\n"
                                                  + ",".join(str(figures[k]) for k in STAT_NAMES) + "\n")
    gain = f"+{100 * (1 - 51 / 101):.1f}"
    assert (f"FGD student minus plain student of the same seed, over 2 seeds: +0.0 ± 0.0 mAP50 (per seed: +0.0, +0.0), "
            f"+0.0 ± 0.0 mAP50-95 (per seed: +0.0, +0.0), {gain} ± 0.0 AP with classes merged (per seed: {gain}, "
            f"{gain}); root mean square 0.0 / 0.0 / {gain[1:]}") in write_report(tmp_path / "jittor").read_text()
    md = compare.write_comparison([tmp_path / "pytorch", tmp_path / "jittor"]).read_text()
    paired = [line for line in md.split("## Differences paired by seed")[1].split("## Per seed")[0].splitlines()
              if line.startswith("| ")]
    assert paired[0] == ("| difference | study | seeds | mAP50 | mAP50-95 | AP with classes merged | rms mAP50 | "
                         "rms mAP50-95 | rms AP with classes merged |")
    assert paired[1] == f"| FGD student minus plain student | pytorch | 2 | +0.0 ± 0.0 | +0.0 ± 0.0 | {gain} ± 0.0 | " \
                        f"0.0 | 0.0 | {gain[1:]} |"
    assert paired[3].startswith("| FGD student minus plain student | jittor − pytorch | 2 | +0.0 ± 0.0 | +0.0 ± 0.0 | "
                                "+0.0 ± 0.0 |")
    per_seed = md.split("## Per seed (mAP50-95 / AP with classes merged, %)")[1].split("![")[0]
    seeds = [line for line in per_seed.splitlines() if line.startswith("| 1 |")]
    assert seeds == [f"| 1 | 25.0 / 50.5 | 25.0 / 100.0 | 25.0 / 50.5 | 25.0 / 100.0 | +0.0 / {gain} | +0.0 / {gain} | "
                     "+0.0 / +0.0 |"]


def write_coco_csv(run, ap):
    """coco.csv as save_coco writes it: AP, AP50, AP75, small, medium (none in the split: -1), large, then AR."""
    figures = [ap, 1.5 * ap, ap, 0.5 * ap, -1, 1.2 * ap, *[ap] * 6]
    (run / "coco.csv").write_text(",".join(STAT_NAMES) + "\n" + ",".join(map(str, figures)) + "\n")


def test_report_gives_the_coco_figures_of_the_runs_that_have_them(tmp_path):
    write_coco_csv(fake_run(tmp_path / "teacher", [0.6], [0.8, 0.6]), 0.5)
    fake_run(tmp_path / "student", [0.3], [0.4, 0.2])  # validated by an older tree: no coco.csv
    for seed, ap in ((0, 0.3), (1, 0.4)):
        write_coco_csv(fake_run(tmp_path / seeded_name("student_fgd", seed, 0), [0.4], [0.5, 0.3], mode="KD",
                                seed=seed), ap)
    md = write_report(tmp_path).read_text()
    assert "| run | AP | AP50 | AP75 | APs | APm | APl |" in md
    assert "| teacher | 50.0 | 75.0 | 50.0 | 25.0 | n/a | 60.0 |" in md
    assert "| FGD student (mean of 2 seeds) | 35.0 | 52.5 | 35.0 | 17.5 | n/a | 42.0 |" in md
    coco_rows = [line for line in md.split("## COCO figures")[1].splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in coco_rows] == ["| run", "| teacher", "| FGD student (mean of 2 seeds)"]

    for coco_csv in tmp_path.glob("*/coco.csv"):
        coco_csv.unlink()
    assert "COCO" not in write_report(tmp_path).read_text()


def test_a_run_without_per_class_csv_reports_the_best_fitness_epoch(tmp_path):
    run = load_run(fake_run(tmp_path / "teacher", [0.2, 0.6, 0.5]))
    assert run["best_epoch"] == 2 and run["mAP50"] == pytest.approx(0.6) and run["per_class"] is None


def test_report_without_runs_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.csv"):
        write_report(tmp_path)


def test_run_state(tmp_path):
    run = tmp_path / "run"
    assert study.run_state(run, 3, ".pt") == "new"
    fake_run(run, [0.1, 0.2])
    (run / "weights").mkdir()
    (run / "weights" / "last.pt").touch()
    assert study.run_state(run, 3, ".pt") == "resume"
    assert study.run_state(run, 2, ".pt") == "validate"
    assert study.run_state(run, 3, ".pkl") == "new"
    (run / "per_class.csv").touch()
    assert study.run_state(run, 3, ".pt") == "done"


def test_presets_and_run_plan(tmp_path):
    opt = study.parse_opt(["--reduced", "--imgsz", "256", "--project", str(tmp_path), "--runs", *study.RUN_NAMES])
    assert (opt.imgsz, opt.batch_size, opt.teacher_cfg, opt.student_width) == (256, 16, "yolov5n.yaml", 0.125)
    full = study.parse_opt([])
    assert (full.imgsz, full.batch_size, full.epochs, full.teacher_cfg, full.student_width) == (
        512, 32, 150, "yolov5s.yaml", None)
    plan = study.run_plan(opt, ".pkl")
    (teacher, t_argv), (student, s_argv), (fgd, f_argv), (rerun, r_argv), (fgd_rerun, fr_argv) = plan
    assert (teacher, student, fgd, rerun, fgd_rerun) == study.RUN_NAMES
    assert r_argv == [*s_argv[:-2], "--perturb", "1e-7", "--name", "student_rerun"] and s_argv[-2] == "--name"
    assert fr_argv == [*f_argv[:-2], "--perturb", "1e-7", "--name", "student_fgd_rerun"]
    assert [name for name, _ in study.run_plan(study.parse_opt([]), ".pt")] == ["teacher", "student", "student_fgd"]
    assert t_argv[t_argv.index("--cfg") + 1] == "yolov5n.yaml"
    student_cfg = s_argv[s_argv.index("--cfg") + 1]
    assert load_model_cfg(student_cfg)["width_multiple"] == 0.125 and f_argv[f_argv.index("--cfg") + 1] == student_cfg
    assert f_argv[:2] == ["--mode", "KD"] and f_argv[f_argv.index("--teacher") + 1].endswith("teacher/weights/best.pkl")
    assert t_argv[t_argv.index("--imgsz") + 1] == "256" and "--exist-ok" in t_argv and "--cache" not in t_argv
    cached = study.run_plan(study.parse_opt(["--cache", "--project", str(tmp_path)]), ".pt")
    assert all(argv[argv.index("--cache") + 1] == "ram" for _, argv in cached)
    assert "--noamp" not in t_argv
    float32 = study.parse_opt(["--noamp", "--project", str(tmp_path)])
    assert all("--noamp" in argv for _, argv in study.run_plan(float32, ".pt"))
    assert "--noamp" in study.protocol_line(float32) and "--noamp" not in study.protocol_line(opt)

    repeated = study.run_plan(study.parse_opt(["--reduced", "--seed", "3", "--repeats", "2", "--project",
                                                 str(tmp_path), "--runs", *study.RUN_NAMES]), ".pkl")
    assert [name for name, _ in repeated] == ["teacher", "student", "student_fgd", "student_rerun",
                                              "student_fgd_rerun", "student_seed4", "student_fgd_seed4",
                                              "student_rerun_seed4", "student_fgd_rerun_seed4"]
    assert [argv[argv.index("--seed") + 1] for _, argv in repeated] == ["3"] * 5 + ["4"] * 4
    f_argv = repeated[-3][1]
    assert f_argv[f_argv.index("--teacher") + 1].endswith("teacher/weights/best.pkl")  # one teacher for all seeds
    with pytest.raises(SystemExit):
        study.parse_opt(["--repeats", "0"])
    with pytest.raises(SystemExit):
        study.parse_opt(["--reduced", "--cheap"])


def test_the_cheap_preset_trains_every_run_kind_on_synthetic_data(tmp_path):
    cheap = study.parse_opt(["--cheap", "--project", str(tmp_path)])
    assert (cheap.data, cheap.imgsz, cheap.batch_size, cheap.epochs, cheap.student_width) == ("", 256, 16, 120, 0.125)
    assert (cheap.noval, cheap.cache, cheap.runs) == (True, "ram", list(study.RUN_NAMES))
    assert study.parse_opt(["--cheap", "--cache", "disk", "--runs", "student"]).cache == "disk"
    assert "Cheap CPU protocol" in study.protocol_line(cheap)
    plan = study.run_plan(cheap, ".pt")
    assert all("--noval" in argv and argv[argv.index("--cache") + 1] == "ram" for _, argv in plan)


def untrainable_tree(name, suffix, framework):
    """A study Tree whose every entry point fails: for checks that must refuse before anything runs."""
    def no_training(*_):
        raise AssertionError("trained")

    return study.Tree(name, no_training, no_training, no_training, no_training, no_training, suffix, framework)


def test_a_study_refuses_and_keeps_a_project_of_the_other_framework(tmp_path):
    """A Jittor study pointed at a PyTorch study's project must neither report PyTorch's runs as its own nor
    delete them, not even with --force."""
    for name in ("teacher", "student"):
        run = fake_run(tmp_path / name, [0.1, 0.2])
        (run / "weights").mkdir()
        (run / "weights" / "last.pt").touch()
    (tmp_path / "teacher" / "per_class.csv").touch()

    jittor = untrainable_tree("YOLOv5Jittor", ".pkl", "jittor")
    for extra in ([], ["--force"]):
        with pytest.raises(ValueError, match="teacher: holds a pytorch run \\(weights/last.pt\\)"):
            study.main(jittor, study.parse_opt(["--project", str(tmp_path), *extra], "jittor"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student", "teacher"]
    assert (tmp_path / "teacher" / "per_class.csv").is_file()
    assert (tmp_path / "student" / "weights" / "last.pt").is_file()
    assert study.parse_opt([], "jittor").project == "runs/study/jittor" != study.parse_opt([]).project


def test_a_study_checks_its_hyp_for_the_fgd_weights_before_it_trains(tmp_path):
    shipped = load_yaml(ROOT / "YOLOv5Pytorch" / "hyp.scratch-low.yaml")
    plain = tmp_path / "plain.yaml"
    save_yaml(plain, {k: v for k, v in shipped.items() if not k.startswith(("kd_", "fgd_"))})

    pytorch = untrainable_tree("YOLOv5Pytorch", ".pt", "pytorch")
    with pytest.raises(ConfigError, match="plain.yaml.*--mode KD.*kd_weight"):
        study.main(pytorch, study.parse_opt(["--project", str(tmp_path / "study"), "--hyp", str(plain)]))
    assert not (tmp_path / "study").exists()


def test_a_study_of_a_missing_dataset_writes_nothing(tmp_path):
    pytorch = untrainable_tree("YOLOv5Pytorch", ".pt", "pytorch")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        study.main(pytorch, study.parse_opt(["--project", str(tmp_path / "study"), "--data",
                                             str(tmp_path / "nope.yaml")]))
    assert not (tmp_path / "study").exists()


def test_a_study_with_a_given_teacher_trains_only_the_students_and_checks_the_teacher_first(tmp_path):
    opt = study.parse_opt(["--reduced", "--teacher", "elsewhere/best.pt", "--repeats", "2", "--project", str(tmp_path)])
    plan = study.run_plan(opt, ".pkl")
    assert [name for name, _ in plan] == ["student", "student_fgd", "student_seed1", "student_fgd_seed1"]
    assert all(argv[argv.index("--teacher") + 1] == "elsewhere/best.pt" for _, argv in plan[1::2])
    assert "The teacher, trained elsewhere: `elsewhere/best.pt`" in study.protocol_line(opt)

    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
    data = tmp_path / "data.yaml"
    save_yaml(data, {"path": str(tmp_path), "train": "images/train", "val": "images/val", "nc": 2, "names": ["a", "b"]})
    other = tmp_path / "other.pkl"
    write_pickle_checkpoint({"names": ["a", "c"], "nc": 2}, other)

    pytorch = untrainable_tree("YOLOv5Pytorch", ".pt", "pytorch")
    for teacher, error, message in ((tmp_path / "missing.pt", FileNotFoundError, "missing.pt"),
                                    (other, ValueError, r"other.pkl: trained on the classes \['a', 'c'\]")):
        with pytest.raises(error, match=message):
            study.main(pytorch, study.parse_opt(["--project", str(tmp_path / "study"), "--data", str(data),
                                                 "--teacher", str(teacher)]))
    assert not (tmp_path / "study").exists()


def test_check_protocol_compares_options_and_architecture_not_cfg_names(tmp_path):
    def parse_opt(argv):  # the options of train.py that the check reads
        p = argparse.ArgumentParser()
        p.add_argument("--cfg")
        p.add_argument("--mode")
        for k in ("--epochs", "--imgsz", "--batch-size", "--seed"):
            p.add_argument(k, type=int)
        p.add_argument("--perturb", type=float, default=0.0)
        p.add_argument("--noamp", action="store_true")
        p.add_argument("--hyp", default=str(HYP))
        p.add_argument("--teacher", default="")
        return p.parse_args(argv)

    run = fake_run(tmp_path / "run", [0.1, 0.2])  # opt.yaml: yolov5n.yaml, train, 2 epochs, imgsz 64, batch 8
    copy = tmp_path / "copy-of-yolov5n.yaml"
    save_yaml(copy, load_model_cfg("yolov5n.yaml"))
    argv = ["--mode", "train", "--epochs", "2", "--batch-size", "8", "--seed", "0"]
    study.check_protocol(run, [*argv, "--imgsz", "64", "--cfg", str(copy)], parse_opt)
    with pytest.raises(ValueError, match="cfg yolov5n.yaml"):
        study.check_protocol(run, [*argv, "--imgsz", "64", "--cfg", "yolov5s.yaml"], parse_opt)
    with pytest.raises(ValueError, match="imgsz 64 \\(wanted 32\\)"):
        study.check_protocol(run, [*argv, "--imgsz", "32", "--cfg", "yolov5n.yaml"], parse_opt)
    # opt.yaml of a run before --perturb existed: it ran unperturbed, so it is no rerun
    with pytest.raises(ValueError, match="perturb 0.0 \\(wanted 1e-07\\)"):
        study.check_protocol(run, [*argv, "--imgsz", "64", "--cfg", "yolov5n.yaml", "--perturb", "1e-7"], parse_opt)
    with pytest.raises(ValueError, match="noamp False \\(wanted True\\)"):  # and before --noamp: mixed precision
        study.check_protocol(run, [*argv, "--imgsz", "64", "--cfg", "yolov5n.yaml", "--noamp"], parse_opt)


def test_check_protocol_compares_the_recipe_and_the_teacher_not_file_names(tmp_path, monkeypatch):
    def parse_opt(argv):
        p = argparse.ArgumentParser()
        p.add_argument("--cfg", default="yolov5n.yaml")
        p.add_argument("--mode", default="train")
        p.add_argument("--hyp", default=str(HYP))
        p.add_argument("--teacher", default="")
        return p.parse_args(argv)

    monkeypatch.setattr(study, "CHECKED_OPTIONS", ())  # those the test above covers
    hyp = {k: v for k, v in load_yaml(HYP).items() if k != "nbs"}  # a run's hyp without it: the default
    run = tmp_path / "run"
    run.mkdir()
    save_yaml(run / "hyp.yaml", hyp)
    save_yaml(run / "opt.yaml", dict(cfg="yolov5n.yaml", mode="KD", teacher=str(tmp_path / "teacher.pt")))
    same = tmp_path / "copy.yaml"  # the default made explicit, and a key nothing reads: the same recipe
    save_yaml(same, {**hyp, "nbs": 64, "copy_paste": 0.5})
    study.check_protocol(run, ["--mode", "KD", "--hyp", str(same), "--teacher", str(tmp_path / "x" / ".." /
                                                                                   "teacher.pt")], parse_opt)
    for change, message in (({"nbs": 16}, "hyp nbs 64 \\(wanted 16\\)"), ({"kd_weight": 0.5}, "hyp kd_weight"),
                            ({"kd_weightf": 0.1}, "hyp kd_weightf 1.0 \\(wanted 0.1\\)")):
        other = tmp_path / "other.yaml"
        save_yaml(other, {**hyp, **change})
        with pytest.raises(ValueError, match=message):
            study.check_protocol(run, ["--mode", "KD", "--hyp", str(other), "--teacher", str(tmp_path / "teacher.pt")],
                                 parse_opt)
    with pytest.raises(ValueError, match="teacher .*teacher.pt \\(wanted .*other-teacher.pt\\)"):
        study.check_protocol(run, ["--mode", "KD", "--hyp", str(same), "--teacher", str(tmp_path / "other-teacher.pt")],
                             parse_opt)
    # A plain run reads neither the FGD weights nor a teacher
    save_yaml(run / "opt.yaml", dict(cfg="yolov5n.yaml", mode="train"))
    save_yaml(other, {**hyp, "kd_weight": 0.5, "kd_weightf": 0.1})
    study.check_protocol(run, ["--hyp", str(other)], parse_opt)


def test_comparison_gives_each_studys_coco_figures_and_their_difference(tmp_path):
    for study_name, teacher_ap, student_aps in (("pytorch", 0.5, (0.3, 0.4)), ("jittor", 0.4, (0.2,))):
        write_coco_csv(fake_run(tmp_path / study_name / "teacher", [0.6], [0.8, 0.6]), teacher_ap)
        for seed, ap in enumerate(student_aps):
            write_coco_csv(fake_run(tmp_path / study_name / seeded_name("student", seed, 0), [0.3], [0.4, 0.2],
                                    seed=seed), ap)
    write_coco_csv(fake_run(tmp_path / "pytorch" / "student_fgd", [0.4], [0.5, 0.3], mode="KD"), 0.3)
    fake_run(tmp_path / "jittor" / "student_fgd", [0.4], [0.5, 0.3], mode="KD")  # validated by an older tree
    md = compare.write_comparison([tmp_path / "pytorch", tmp_path / "jittor"]).read_text()
    coco_rows = [line for line in md.split("## COCO figures")[1].splitlines() if line.startswith("| ")]
    assert coco_rows == [
        "| run | study | AP | AP50 | AP75 | APs | APm | APl |",
        "| teacher | pytorch | 50.0 | 75.0 | 50.0 | 25.0 | n/a | 60.0 |",
        "| teacher | jittor | 40.0 | 60.0 | 40.0 | 20.0 | n/a | 48.0 |",
        "| teacher | jittor − pytorch | -10.0 | -15.0 | -10.0 | -5.0 | n/a | -12.0 |",
        "| student | pytorch (2) | 35.0 | 52.5 | 35.0 | 17.5 | n/a | 42.0 |",
        "| student | jittor | 20.0 | 30.0 | 20.0 | 10.0 | n/a | 24.0 |",
        "| student | jittor − pytorch | -15.0 | -22.5 | -15.0 | -7.5 | n/a | -18.0 |",
        "| FGD student | pytorch | 30.0 | 45.0 | 30.0 | 15.0 | n/a | 36.0 |"]

    for coco_csv in tmp_path.glob("*/*/coco.csv"):
        coco_csv.unlink()
    assert "COCO" not in compare.write_comparison([tmp_path / "pytorch", tmp_path / "jittor"]).read_text()
