"""The NWPU VHR-10 study in one command: train the teacher, the student and the FGD student with one protocol,
then write the results table and comparison plots (yolocore.study.report).

Framework-neutral: each tree's study.py hands in its train/val entry points as a Tree. A run whose folder
already holds per_class.csv (the final validation of its best weights) is skipped, an interrupted one
resumes from its last checkpoint, and one that trained every epoch but lacks per_class.csv (a run of an older
tree) is validated again; --force retrains them all from scratch. A finished or interrupted run is reused only
if it trained by the options, the model, the recipe (the hyp's values) and the teacher this study asks for.

--repeats N trains the student and the FGD student at seeds seed .. seed+N-1, against the one teacher: a seed fixes
the initial weights and the order and augmentation of the batches, so the two runs of a seed differ by the FGD
term alone, and the report gives their difference as a mean over seeds with its standard error.

--runs ... student_rerun adds, at each seed, the plain student again from its starting weights moved by 1e-7
(train.py --perturb): it differs from the plain student by rounding alone, and the report gives that difference as
the yardstick for the FGD gain (and, across frameworks, for a difference between the trees).

--runs ... student_fgd_rerun does the same for the FGD student: how far rounding alone moves a run in KD mode.

--cheap is the protocol that measures FGD's effect over many seeds on a 2-core CPU (docs/protocol.md): synthetic data,
small models, every run kind, 25-45 minutes a seed on one core.

--gpu is the full protocol in one call on one GPU (yolocore.study.gpu): runs side by side, --cache ram, validation
every 10 epochs, workers sized to the cores, --pack DIR for the files to bring back.

--teacher CKPT distils a teacher trained elsewhere (either tree's checkpoint, on the study's classes) instead of
training one: the study then trains only the students.
"""
import argparse
import json
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from yolocore.cli import NOAMP_HELP, non_negative_int, positive_int
from yolocore.config import (
    ROOT,
    load_data_yaml,
    load_hyp,
    load_model_cfg,
    load_yaml,
    save_yaml,
    trained_hyp,
    write_text_atomically,
)
from yolocore.data.synthetic import make_synthetic_dataset
from yolocore.study import gpu
from yolocore.study.report import (
    RERUN_PERTURBATION,
    RUNS,
    STUDY_JSON,
    read_csv_columns,
    run_kind,
    seeded_name,
    write_report,
)
from yolocore.training.checkpoints import SUFFIXES, read_checkpoint

RUN_NAMES = tuple(RUNS)  # the order they run in: the FGD student needs the teacher
DEFAULT_RUNS = ("teacher", "student", "student_fgd")
NWPU = str(ROOT / "data" / "NWPU.yaml")
FULL = dict(data=NWPU, imgsz=512, batch_size=32, epochs=150, teacher_cfg="yolov5s.yaml", student_cfg="yolov5n.yaml",
            teacher_width=None, student_width=None, runs=DEFAULT_RUNS, workers=8, val_period=1)
# What a 2-core CPU trains in about 1.5 h: a yolov5n teacher and a student at half its width, at imgsz 320.
REDUCED = dict(FULL, imgsz=320, batch_size=16, epochs=35, teacher_cfg="yolov5n.yaml", student_width=0.125)
# FGD's effect and both calibrations over many seeds on a 2-core CPU, minutes a run: the same models on synthetic
# data (data "" = CHEAP_DATA, written on first use; 128 validation images, not the built-in 32, for steadier mAP),
# validated once, at the end, from images decoded once. nbs 16: an optimizer step every batch, 960 in a run instead
# of YOLOv5's 240, whose runs moved by several mAP50-95 from rounding alone; 120 epochs, as at 60 the students had not
# converged and rounding moved a run further (docs/protocol.md).
CHEAP = dict(REDUCED, data="", imgsz=256, epochs=120, runs=RUN_NAMES, noval=True, cache="ram", nbs=16)
CHEAP_DATA = dict(root=ROOT / "datasets" / "synthetic-cheap", n_train=128, n_val=128, imgsz=256, seed=0)
# The full protocol in one call on one GPU (yolocore.study.gpu): the teacher, the student and its calibration run side
# by side, then the FGD student; validated every 10 epochs, from images decoded once; workers sized to the cores.
GPU = dict(FULL, runs=("teacher", "student", "student_rerun", "student_fgd"), cache="ram", val_period=10,
           workers=None)
CHECKED_OPTIONS = ("mode", "epochs", "imgsz", "batch_size", "seed", "perturb", "noamp")  # a reused run matches these
OLDER_RUNS_LACK = {"perturb": 0.0, "noamp": False}  # options runs of older trees did not record, at their values


@dataclass
class Tree:
    """A framework tree's entry points: train.py's and val.py's parse_opt and main, its select_device, the
    suffix of its checkpoints and its framework's name."""
    name: str
    train_parse_opt: Callable
    train: Callable
    val_parse_opt: Callable
    val: Callable
    select_device: Callable
    suffix: str
    framework: str


def parse_opt(argv=None, framework="pytorch"):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help=f"dataset yaml (default {NWPU}; with --cheap, or given as '', synthetic data "
                                  f"in {CHEAP_DATA['root']})")
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--reduced", action="store_true",
                        help="CPU preset: imgsz 320, batch 16, 35 epochs, teacher yolov5n, student yolov5n at width "
                             "0.125")
    preset.add_argument("--cheap", action="store_true",
                        help="CPU preset for many seeds (docs/protocol.md): the --reduced models on synthetic data, "
                             "imgsz 256, 120 epochs, --noval, --cache ram, every run kind")
    preset.add_argument("--gpu", action="store_true",
                        help="the full protocol in one call on one GPU (docs/study.md): teacher, student and "
                             "student_rerun side by side, then student_fgd; --cache ram, --val-period 10, workers "
                             "split across the cores")
    p.add_argument("--imgsz", type=positive_int, help=f"default {FULL['imgsz']}")
    p.add_argument("--batch-size", type=positive_int, help=f"default {FULL['batch_size']}")
    p.add_argument("--epochs", type=positive_int, help=f"default {FULL['epochs']}")
    p.add_argument("--teacher", default="", help="a trained teacher checkpoint to distil instead of training one")
    p.add_argument("--teacher-cfg", help=f"default {FULL['teacher_cfg']}")
    p.add_argument("--student-cfg", help=f"default {FULL['student_cfg']}")
    p.add_argument("--teacher-width", type=float, help="override the teacher cfg's width_multiple")
    p.add_argument("--student-width", type=float, help="override the student cfg's width_multiple")
    p.add_argument("--hyp", default="", help="hyperparameter yaml (default: the tree's hyp.scratch-low.yaml)")
    p.add_argument("--nbs", type=positive_int,
                   help="every run's nominal batch: a copy of the hyp with this nbs, written into the project "
                        "(default the hyp's own; --cheap: 16)")
    p.add_argument("--device", default="", help="cuda device, i.e. 0, or cpu")
    p.add_argument("--workers", type=non_negative_int, help="data-loading processes per run (default 8; with --gpu, "
                                                            "the cores split among the runs side by side)")
    p.add_argument("--cache", nargs="?", const="ram", choices=("ram", "disk"),
                   help="train.py --cache: images decoded and resized once, for every run")
    p.add_argument("--project", default=f"runs/study/{framework}",
                   help="folder of the runs and the report; each framework's study needs its own")
    p.add_argument("--seed", type=int, default=0, help="the teacher's seed and the first student pair's")
    p.add_argument("--repeats", type=positive_int, default=1,
                   help="student / FGD-student pairs, at seeds seed, seed+1, ...: the FGD gain over several seeds")
    p.add_argument("--noval", action="store_true", help="validate only after the last epoch (no mAP curves)")
    p.add_argument("--val-period", type=positive_int, metavar="N",
                   help="validate every N epochs and after the last (default 1; with --gpu 10)")
    p.add_argument("--pack", default="", metavar="DIR",
                   help="with --gpu: then write the report and best weights into a few files in DIR "
                        "(yolocore.study.pack)")
    p.add_argument("--noamp", action="store_true", help="train.py and val.py --noamp: " + NOAMP_HELP)
    p.add_argument("--force", action="store_true", help="retrain every run from scratch")
    p.add_argument("--runs", nargs="+", choices=RUN_NAMES,
                   help="the runs to train now (with --repeats, those of every seed), e.g. the teacher and the "
                        "student as two processes side by side (the FGD student needs the teacher's best weights); "
                        f"student_rerun, student_fgd_rerun: the student, the FGD student again from weights moved by "
                        f"{RERUN_PERTURBATION} (noise); default {' '.join(DEFAULT_RUNS)}, with --cheap all")
    opt = p.parse_args(argv)
    if opt.pack and not opt.gpu:
        p.error("--pack goes with --gpu; a study already written is packed by python -m yolocore.study.pack")
    preset = GPU if opt.gpu else CHEAP if opt.cheap else REDUCED if opt.reduced else FULL
    for k, v in {"noval": False, "cache": "", **preset}.items():
        if getattr(opt, k) is None or getattr(opt, k) is False:  # not given (a flag not set): the preset's
            setattr(opt, k, v)
    opt.runs = list(opt.runs)
    return opt


def model_cfg(cfg, width, project):
    """cfg itself, or a copy with width_multiple replaced, written into the project so the run can be rebuilt."""
    if width is None:
        return cfg
    data = load_model_cfg(cfg)
    data["width_multiple"] = width
    path = Path(project) / "cfg" / f"{Path(cfg).stem}-w{width:g}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_yaml(path, data)
    return str(path)


def study_hyp(opt, tree):
    """--hyp (default: the tree's), or with --nbs a copy of it with that nbs, written into the project: every run,
    and the study when it resumes, reads the one file."""
    if opt.nbs is None:
        return opt.hyp
    hyp = load_yaml(opt.hyp or ROOT / tree.name / "hyp.scratch-low.yaml")
    path = Path(opt.project) / "hyp" / f"{Path(opt.hyp).stem if opt.hyp else 'hyp.scratch-low'}-nbs{opt.nbs}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_yaml(path, {**hyp, "nbs": opt.nbs})
    return str(path)


def run_plan(opt, suffix):
    """(name, train.py arguments) of the runs --runs asks for: the teacher (unless --teacher gives one), then the
    student, the FGD student and the rerun student of each seed, in the order they must run."""
    common = ["--data", opt.data, "--imgsz", str(opt.imgsz), "--batch-size", str(opt.batch_size),
              "--epochs", str(opt.epochs), "--device", opt.device, "--workers", str(opt.workers),
              "--project", opt.project, "--exist-ok"]
    common += ["--hyp", opt.hyp] if opt.hyp else []
    common += ["--noval"] if opt.noval else []
    common += ["--val-period", str(opt.val_period)] if opt.val_period > 1 else []
    common += ["--noamp"] if opt.noamp else []
    common += ["--cache", opt.cache] if opt.cache else []
    student = model_cfg(opt.student_cfg, opt.student_width, opt.project)
    best_teacher = opt.teacher or str(Path(opt.project) / "teacher" / "weights" / f"best{suffix}")
    plan = []
    if not opt.teacher:
        teacher = model_cfg(opt.teacher_cfg, opt.teacher_width, opt.project)
        plan.append(("teacher", ["--cfg", teacher, *common, "--seed", str(opt.seed), "--name", "teacher"]))
    for seed in range(opt.seed, opt.seed + opt.repeats):
        plain, fgd, rerun, fgd_rerun = (seeded_name(kind, seed, opt.seed) for kind in RUN_NAMES[1:])
        seeded = [*common, "--seed", str(seed)]
        kd = ["--mode", "KD", "--cfg", student, "--teacher", best_teacher, *seeded]
        perturbed = ["--perturb", RERUN_PERTURBATION]
        plan += [(plain, ["--cfg", student, *seeded, "--name", plain]),
                 (fgd, [*kd, "--name", fgd]),
                 (rerun, ["--cfg", student, *seeded, *perturbed, "--name", rerun]),
                 (fgd_rerun, [*kd, *perturbed, "--name", fgd_rerun])]
    return [(name, argv) for name, argv in plan if run_kind(name) in opt.runs]


def epochs_logged(run_dir):
    path = Path(run_dir) / "results.csv"
    return len(read_csv_columns(path)["epoch"]) if path.is_file() and path.stat().st_size else 0


def run_state(run_dir, epochs, suffix):
    """'done', 'validate' (trained, final validation missing), 'resume' or 'new'."""
    run_dir = Path(run_dir)
    if (run_dir / "per_class.csv").is_file():
        return "done"
    if not (run_dir / "weights" / f"last{suffix}").is_file():
        return "new"
    return "validate" if epochs_logged(run_dir) >= epochs else "resume"


def check_framework(run_dir, suffix):
    """Another framework's checkpoints in a run folder are an error: reusing the folder would report that
    framework's results as this one's, and starting it afresh would delete them."""
    for framework, other in SUFFIXES.items():
        if other != suffix and (Path(run_dir) / "weights" / f"last{other}").is_file():
            raise ValueError(f"{run_dir}: holds a {framework} run (weights/last{other}); each framework's study "
                             "needs its own --project")


def check_protocol(run_dir, argv, train_parse_opt):
    """A run trained with other options must not be reused silently."""
    wanted, had = vars(train_parse_opt(argv)), {**OLDER_RUNS_LACK, **load_yaml(Path(run_dir) / "opt.yaml")}
    differ = [f"{k} {had.get(k)} (wanted {wanted[k]})" for k in CHECKED_OPTIONS if had.get(k) != wanted[k]]
    # The architecture, not the file name: a cfg copied elsewhere is still the same model.
    if load_model_cfg(had.get("cfg", "")) != load_model_cfg(wanted["cfg"]):
        differ.append(f"cfg {had.get('cfg')} (wanted a model like {wanted['cfg']})")
    # The recipe, not the hyp file's name: the copy --nbs writes is the same recipe as the file it copies.
    kd, trained = wanted["mode"] == "KD", Path(run_dir) / "hyp.yaml"
    if trained.is_file():
        had_hyp, wanted_hyp = trained_hyp(load_yaml(trained), kd), trained_hyp(load_yaml(wanted["hyp"]), kd)
        differ += [f"hyp {k} {had_hyp.get(k)} (wanted {v})" for k, v in wanted_hyp.items() if had_hyp.get(k) != v]
    if kd and Path(had.get("teacher") or "").resolve() != Path(wanted["teacher"]).resolve():
        differ.append(f"teacher {had.get('teacher')} (wanted {wanted['teacher']})")
    if differ:
        raise ValueError(f"{run_dir}: trained with other options: {', '.join(differ)}; pass --force to retrain, "
                         "or choose another --project")


class StudyLog:
    """study.json beside the runs: the protocol and the command of each run (its checkpoints record its device and
    time: yolocore.training.record)."""

    def __init__(self, project, protocol, title):
        self.path = Path(project) / STUDY_JSON
        self.data = json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}
        self.data.update(title=title, protocol=protocol)
        self.data.setdefault("runs", {})

    def record(self, name, command):
        # Study processes that train other runs side by side share this file: take in what they wrote meanwhile.
        if self.path.is_file():
            self.data["runs"] = json.loads(self.path.read_text(encoding="utf-8")).get("runs", {})
        self.data["runs"][name] = {"command": command}
        self.save()

    def save(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.path, json.dumps(self.data, indent=1))


def protocol_line(opt):
    kind = "Cheap CPU protocol" if opt.cheap else "Reduced CPU protocol" if opt.reduced else "Protocol"
    students = f"seed {opt.seed}" if opt.repeats == 1 else f"seeds {opt.seed}-{opt.seed + opt.repeats - 1}"
    if opt.teacher:
        seeds = f"students at {students}"
    else:
        seeds = students if opt.repeats == 1 else f"teacher at seed {opt.seed}, students at {students}"
    teacher = f" The teacher, trained elsewhere: `{opt.teacher}`." if opt.teacher else ""
    return (f"{kind}: data `{opt.data}`, imgsz {opt.imgsz}, batch {opt.batch_size}, epochs {opt.epochs} (from "
            f"scratch), {seeds}, {Path(opt.hyp).name if opt.hyp else 'hyp.scratch-low.yaml'}"
            f"{', --noval' if opt.noval else ''}"
            f"{f', validated every {opt.val_period} epochs' if opt.val_period > 1 else ''}"
            f"{', --noamp' if opt.noamp else ''}.{teacher}")


def check_teacher(path, data):
    """A given teacher must exist and know the dataset's classes: checked before the students train, not when the
    FGD student starts, hours later."""
    ckpt = read_checkpoint(path)
    names = load_data_yaml(data)["names"]
    if list(ckpt.get("names", [])) != list(names):
        raise ValueError(f"--teacher {path}: trained on the classes {list(ckpt.get('names', []))}, but {data} has "
                         f"{list(names)}")


def train_run(tree, name, argv, state, log, opt):
    """Train (or resume) one run. The command recorded is the one that trains it from scratch, however often it
    resumed."""
    last = str(Path(opt.project) / name / "weights" / f"last{tree.suffix}")
    run_argv = argv if state == "new" else ["--resume", last, "--device", opt.device, "--workers", str(opt.workers),
                                            *(["--cache", opt.cache] if opt.cache else [])]
    log.record(name, f"python {tree.name}/train.py {shlex.join(argv)}")
    tree.train(tree.train_parse_opt(run_argv))


def validate_run(tree, run_dir, opt):
    """Final validation of best weights into the run folder itself, where train.py would have written it."""
    argv = ["--weights", str(Path(run_dir) / "weights" / f"best{tree.suffix}"), "--data", opt.data,
            "--imgsz", str(opt.imgsz), "--batch-size", str(opt.batch_size * 2), "--device", opt.device,
            "--workers", str(opt.workers), "--project", str(Path(run_dir).parent), "--name", Path(run_dir).name,
            "--exist-ok", "--save-json", *(["--noamp"] if opt.noamp else [])]
    tree.val(tree.val_parse_opt(argv))


def main(tree, opt):
    opt.hyp = study_hyp(opt, tree)  # before --gpu's children start: they read the one copy, none writes its own
    if opt.gpu:
        return gpu.main(tree, opt)
    project = Path(opt.project)
    if opt.hyp:  # a hyp without the FGD weights would otherwise fail when the FGD student starts, hours in
        load_hyp(opt.hyp, kd=bool({"student_fgd", "student_fgd_rerun"} & set(opt.runs)))
    if not opt.data:
        opt.data = str(make_synthetic_dataset(**CHEAP_DATA))
    if opt.teacher:
        check_teacher(opt.teacher, opt.data)
    plan = run_plan(opt, tree.suffix)
    for name, _ in plan:  # even --force deletes only this framework's runs
        check_framework(project / name, tree.suffix)
    if opt.force:
        for name, _ in plan:
            shutil.rmtree(project / name, ignore_errors=True)
    states = {name: run_state(project / name, opt.epochs, tree.suffix) for name, _ in plan}
    for name, argv in plan:  # refuse a mismatch before anything is trained, logged or deleted
        if states[name] != "new":
            check_protocol(project / name, argv, tree.train_parse_opt)
    load_data_yaml(opt.data)  # a missing dataset fails here, before the project is written
    tree.select_device(opt.device)  # a bad --device fails here too, before the project is written
    log = StudyLog(project, protocol_line(opt),
                   f"Study on {Path(opt.data).stem} ({tree.name}): teacher, student, FGD student")
    log.save()
    for name, argv in plan:
        run_dir, state = project / name, states[name]
        print(f"\n=== {name}: {state} ({run_dir})")
        if state == "new":
            shutil.rmtree(run_dir, ignore_errors=True)  # died before its first checkpoint: nothing worth keeping
        if state in ("new", "resume"):
            train_run(tree, name, argv, state, log, opt)
        elif state == "validate":
            validate_run(tree, run_dir, opt)
        write_report(project)  # after every run, so a long study shows its progress
    path = write_report(project)
    print(f"\nStudy report: {path}")
    return path
