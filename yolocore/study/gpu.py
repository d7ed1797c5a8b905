"""study.py --gpu: the whole protocol in one call on one GPU, within the short slots a GPU machine is lent for.

The GPU is mostly idle while one run trains (yolov5n and yolov5s at imgsz 512 are small for it), so the runs that can
train together do, as processes of their own on the one GPU: first the teacher, the student and the student's
calibration run, then, once the teacher's best weights exist, the FGD student (and its calibration run, when --runs
asks for it). The cores are split among a phase's processes: each gets its share of data-loading workers and of
CPU threads. Each child is the tree's own study.py with --runs naming its one kind, so finished runs are skipped and
interrupted ones resume as in any study; its output goes to PROJECT/logs/KIND.log. The report is written at the end,
and --pack DIR copies what is worth bringing back into a few flat files (yolocore.study.pack).
"""
import os
import subprocess
import sys
import time
from pathlib import Path

from yolocore.config import ROOT, load_data_yaml
from yolocore.study.pack import pack
from yolocore.study.report import write_report

# The FGD runs need the teacher's best weights, so they wait for the first phase.
PHASES = (("teacher", "student", "student_rerun"), ("student_fgd", "student_fgd_rerun"))


def usable_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def split_cores(cores, runs):
    """(data-loading workers, CPU threads) for each of `runs` processes sharing `cores`: each process's main
    thread keeps a core, its workers share the rest."""
    return max(1, (cores - runs) // runs), max(1, cores // runs)


def child_argv(opt, kind, workers):
    """The tree's study.py arguments that train the runs of one kind, with this study's protocol spelt out."""
    argv = ["--data", opt.data, "--imgsz", str(opt.imgsz), "--batch-size", str(opt.batch_size),
            "--epochs", str(opt.epochs), "--teacher-cfg", opt.teacher_cfg, "--student-cfg", opt.student_cfg,
            "--device", opt.device, "--workers", str(workers), "--project", opt.project, "--seed", str(opt.seed),
            "--repeats", str(opt.repeats), "--val-period", str(opt.val_period), "--runs", kind]
    for flag, value in (("--teacher-width", opt.teacher_width), ("--student-width", opt.student_width),
                        ("--teacher", opt.teacher), ("--hyp", opt.hyp), ("--cache", opt.cache)):
        argv += [flag, str(value)] if value not in (None, "") else []
    for flag in ("noval", "noamp", "force"):
        argv += [f"--{flag}"] if getattr(opt, flag) else []
    return argv


def run_phase(script, opt, kinds, cores):
    """Train `kinds` side by side; if one fails, stop the others (the slot is better spent on a rerun)."""
    workers, threads = split_cores(cores, len(kinds))
    workers = workers if opt.workers is None else opt.workers
    logs = Path(opt.project) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    started, procs = time.time(), {}
    print(f"phase {' '.join(kinds)}: {workers} workers and {threads} threads each, logs in {logs}", flush=True)
    for kind in kinds:
        with open(logs / f"{kind}.log", "a") as log:
            procs[kind] = subprocess.Popen([sys.executable, str(script), *child_argv(opt, kind, workers)],
                                           stdout=log, stderr=subprocess.STDOUT, env=env)
    failed = []
    while procs:
        for kind, proc in list(procs.items()):
            if proc.poll() is None:
                continue
            del procs[kind]
            print(f"  {kind}: exit {proc.returncode} after {time.time() - started:.0f} s", flush=True)
            if proc.returncode:
                failed.append(kind)
                for other in procs.values():
                    other.terminate()
        time.sleep(0.5)
    if failed:
        raise RuntimeError(f"study.py --gpu: {', '.join(failed)} failed; see {logs}/{failed[0]}.log")
    return time.time() - started


def main(tree, opt):
    """Both phases, then the report and, with --pack, the files to bring back. Returns the report's path."""
    load_data_yaml(opt.data)  # a missing dataset fails here, in one line, not in each child's log
    script, cores = ROOT / tree.name / "study.py", usable_cores()
    started = time.time()
    for phase in PHASES:
        kinds = [k for k in phase if k in opt.runs and not (k == "teacher" and opt.teacher)]
        if kinds:
            run_phase(script, opt, kinds, cores)
    path = write_report(opt.project)
    print(f"study.py --gpu: {time.time() - started:.0f} s on {cores} cores; report {path}")
    if opt.pack:
        for f in pack(opt.project, opt.pack):
            print(f"  {f} ({f.stat().st_size / 2 ** 20:.1f} MiB)")
    return path
