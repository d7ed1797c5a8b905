"""How often a short distributed training fails: --runs launches of one tree's train.py on two processes (mpirun for
Jittor, torchrun for PyTorch), each one epoch of the built-in synthetic data, counted by exit status. A failing
launch keeps its whole log in --logs. A figure for the question a flaky test raised (the Jittor tree's first MPI
step crashed in 2 of 5 full test runs one day, and in none of some 60 launches the next): how reliable is training on
several processes, away from CI.

    python benchmarks/bench_mpi.py --tree jittor --runs 50      # needs OpenMPI (mpirun, mpicc)
    python benchmarks/bench_mpi.py --tree pytorch --runs 50
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAUNCHERS = {
    "jittor": ["mpirun", "-np", "2", "--oversubscribe", "--bind-to", "none", "--mca", "mpi_yield_when_idle", "1",
               sys.executable],
    "pytorch": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
}
TREES = {"jittor": "YOLOv5Jittor", "pytorch": "YOLOv5Pytorch"}


def parse_opt(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", default="jittor", choices=tuple(TREES))
    p.add_argument("--runs", type=int, default=20, help="launches")
    p.add_argument("--cfg", default="yolov5n.yaml")
    p.add_argument("--imgsz", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8, help="global batch, split over the two processes")
    p.add_argument("--timeout", type=float, default=600, help="seconds before a launch counts as hung")
    p.add_argument("--logs", default="runs/bench_mpi", help="where failing launches' logs are kept")
    return p.parse_args(argv)


def launch_env():
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # OpenMPI refuses root unless asked twice
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return env


def main(opt):
    if opt.tree == "jittor" and not shutil.which("mpirun"):
        sys.exit("mpirun not found: apt-get install openmpi-bin libopenmpi-dev")
    logs = Path(opt.logs)
    logs.mkdir(parents=True, exist_ok=True)
    failed, seconds = [], []
    for run in range(opt.runs):
        with tempfile.TemporaryDirectory() as project:
            log = Path(project) / "log.txt"
            command = [*LAUNCHERS[opt.tree], str(ROOT / TREES[opt.tree] / "train.py"), "--cfg", opt.cfg,
                       "--imgsz", str(opt.imgsz), "--batch-size", str(opt.batch_size), "--epochs", "1", "--noval",
                       "--workers", "0", "--device", "cpu", "--project", project]
            started = time.time()
            with open(log, "w") as out:
                try:
                    status = subprocess.run(command, cwd=ROOT, env=launch_env(), stdout=out,
                                            stderr=subprocess.STDOUT, timeout=opt.timeout).returncode
                except subprocess.TimeoutExpired:
                    status = "hung"
            seconds.append(time.time() - started)
            if status != 0:
                failed.append(run)
                shutil.copy(log, logs / f"{opt.tree}_run{run}.log")
        print(f"run {run + 1}/{opt.runs}: {'ok' if status == 0 else f'FAILED ({status})'} in {seconds[-1]:.1f} s",
              flush=True)
    print(f"\n{opt.tree}: {len(failed)} of {opt.runs} launches failed"
          + (f" (runs {failed}; logs in {logs})" if failed else "")
          + f"; {sum(seconds) / len(seconds):.1f} s a launch")


if __name__ == "__main__":
    main(parse_opt())
