"""Training on several processes with each framework's own engine: torchrun (DistributedDataParallel on gloo,
CPU) for the PyTorch tree, mpirun (Jittor's MPI) for the Jittor tree; two processes each. The runs they are
held to are single-process runs of the same code, made in this process. Each launch takes seconds (the Jittor
tree's first one also compiles kernels for the per-process batch shapes)."""
import contextlib
import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import yaml
from processes import process_tree

import YOLOv5Jittor.utils.checkpoint as jittor_checkpoint
import YOLOv5Pytorch.utils.checkpoint as pytorch_checkpoint
from yolocore.data.dataset import epoch_order
from yolocore.data.synthetic import make_synthetic_dataset
from yolocore.training import loop
from yolocore.training.recipe import per_process_batch
from YOLOv5Jittor import train as jittor_train
from YOLOv5Pytorch import train as pytorch_train
from YOLOv5Pytorch.models.yolo import Model
from YOLOv5Pytorch.utils.framework import sync_batchnorm

ROOT = Path(__file__).resolve().parents[2]
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
HAVE_MPI = shutil.which("mpirun") is not None and shutil.which("mpicc") is not None
SILENCE = 300  # seconds without output after which a launch is hung


def torchrun(*args):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]


def mpirun(*args):
    # yield_when_idle: a rank waiting for rank 0 (validating alone) must not spin on one of two cores
    return [shutil.which("mpirun") or "mpirun", "-np", "2", "--oversubscribe", "--bind-to", "none",
            "--mca", "mpi_yield_when_idle", "1", sys.executable, *args]


TREES = {
    "pytorch": SimpleNamespace(name="pytorch", train=pytorch_train, ckpt=pytorch_checkpoint, launcher=torchrun,
                               sync_bn=[]),
    # Jittor's MPI synchronises BatchNorm on CPUs too (PyTorch's SyncBatchNorm is CUDA-only): its runs use it.
    "jittor": SimpleNamespace(name="jittor", train=jittor_train, ckpt=jittor_checkpoint, launcher=mpirun,
                              sync_bn=["--sync-bn"]),
}


@pytest.fixture(scope="module", params=list(TREES))
def tree(request):
    if request.param == "jittor" and not HAVE_MPI:
        pytest.skip("mpirun/mpicc not found: Jittor's MPI training needs OpenMPI (apt-get install openmpi-bin "
                    "libopenmpi-dev)")
    return TREES[request.param]


def launch_env():
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI run as root; OpenMPI asks for both
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return env


def launch(tree, log, script, *args):
    """script with train.py's args under the tree's launcher, on CPUs, its output appended to log."""
    with open(log, "a") as out:
        proc = subprocess.Popen(tree.launcher(str(script), *args, "--device", "cpu", "--workers", "0"), cwd=ROOT,
                                env=launch_env(), stdout=out, stderr=subprocess.STDOUT)
    proc.log = Path(log)
    return proc


def start(tree, log, *args):
    return launch(tree, log, tree.train.TREE / "train.py", *args)


def crash(proc):
    """Kill the launcher's workers at once, like a power cut or an out-of-memory kill: all are frozen first, so
    none writes another checkpoint while the others are being killed; the launcher then fails by itself. (Not the
    launcher: Jittor, loaded in this process, ends the process when a child of it dies of a signal.)"""
    workers = process_tree(proc.pid)[1:]
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    proc.wait(timeout=120)


def hung(proc, silence=SILENCE):
    """Whether proc's output has not grown for `silence` seconds (processes waiting for each other). Not a limit
    on the whole run: with a cold kernel cache, Jittor takes minutes to compile a run's kernels, printing its
    progress all along."""
    size = proc.log.stat().st_size
    if size != getattr(proc, "log_size", None):
        proc.log_size, proc.log_grew = size, time.monotonic()
    return time.monotonic() - proc.log_grew > silence


def finish(proc):
    while proc.poll() is None and not hung(proc):
        time.sleep(0.2)
    if proc.poll() is None:
        crash(proc)
        pytest.fail(f"no output for {SILENCE} s (processes waiting for each other?)\n{proc.log.read_text()[-4000:]}")
    assert proc.returncode == 0, proc.log.read_text()[-4000:]


def train_args(tree, data, project, name, *args):
    return ["--data", data, "--imgsz", "64", "--batch-size", "8", "--hyp",
            str(tree.train.TREE / "hyp.scratch-low.yaml"), "--project", str(project), "--name", name, *args]


def run_single(tree, *argv):
    return tree.train.train(tree.train.parse_opt([*argv, "--workers", "0"]))


def weights(run, name, tree):
    return Path(run) / "weights" / f"{name}{tree.ckpt.SUFFIX}"


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def as_array(v):
    """A torch tensor, a Jittor Var or an array, as numpy."""
    if isinstance(v, torch.Tensor):
        return v.detach().numpy()
    return v.numpy() if hasattr(v, "numpy") else np.asarray(v)


def structure(obj):
    """What a checkpoint holds, without the values: array shapes and dtypes, keys, container lengths, types."""
    if isinstance(obj, dict):
        return {k: structure(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [structure(v) for v in obj]
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return ("array", tuple(obj.shape), str(obj.dtype))
    return type(obj).__name__


# --- the data each process takes ----------------------------------------------------------------------------

@pytest.mark.parametrize("n,world_size", [(16, 2), (17, 2), (10, 3)])
def test_each_process_takes_its_share_of_every_global_batch(n, world_size):
    full = epoch_order(n, seed=3, epoch=1)
    shards = [epoch_order(n, 3, 1, rank=r, world_size=world_size) for r in range(world_size)]
    assert len({len(s) for s in shards}) == 1, "every process must take the same number of steps"
    global_batch = 2 * world_size
    local = per_process_batch(global_batch, world_size)
    for k in range(-(-len(shards[0]) // local)):
        together = set(np.concatenate([s[k * local:(k + 1) * local] for s in shards]).tolist())
        expected = set(full[k * global_batch:(k + 1) * global_batch].tolist())
        assert expected <= together and together - expected <= set(full[:world_size].tolist()), k
    assert set(np.concatenate(shards).tolist()) == set(range(n))


def test_the_global_batch_must_divide_over_the_processes():
    assert per_process_batch(8, 2) == 4
    with pytest.raises(ValueError, match="--batch-size 7 is the global batch.*2 processes"):
        per_process_batch(7, 2)


def test_pytorch_sync_bn_on_cpus_is_a_clear_error(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match="--sync-bn: torch.nn.SyncBatchNorm runs on CUDA only"):
            sync_batchnorm(Model("yolov5n.yaml", nc=5), torch.device("cpu"))
    finally:
        dist.destroy_process_group()


# --- runs ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(make_synthetic_dataset(tmp_path_factory.mktemp("syn"), n_train=16, n_val=8, imgsz=128, seed=1))


@pytest.fixture(scope="module")
def same_images(tmp_path_factory):
    """Eight copies of one image and its labels: every process's share of a batch then holds what the whole
    batch holds, so (without augmentation) a distributed step must equal a single process's step exactly."""
    yaml_path = make_synthetic_dataset(tmp_path_factory.mktemp("same"), n_train=1, n_val=4, imgsz=128, seed=2)
    for i in range(1, 8):
        for sub, suffix in (("images", ".jpg"), ("labels", ".txt")):
            folder = yaml_path.parent / sub / "train"
            shutil.copy(folder / f"syn_00000{suffix}", folder / f"syn_{i:05d}{suffix}")
    return str(yaml_path)


@pytest.fixture(scope="module")
def still_hyp(tmp_path_factory):
    """No augmentation, and a tenth of the learning rates (tests/parity/test_parity_train.py says why: at full rates the
    first warmup steps of these tiny models amplify float32 rounding)."""
    values = yaml.safe_load(open(pytorch_train.TREE / "hyp.scratch-low.yaml"))
    values.update({k: 0.0 for k in ("hsv_h", "hsv_s", "hsv_v", "translate", "scale", "fliplr", "mosaic")})
    values.update(lr0=values["lr0"] / 10, warmup_bias_lr=values["warmup_bias_lr"] / 10)
    path = tmp_path_factory.mktemp("hyp") / "hyp.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, data, tree):
    """A one-epoch single-process run: what a distributed run must look like, and the KD teacher."""
    project = tmp_path_factory.mktemp("single")
    return run_single(tree, *train_args(tree, data, project, "exp", "--cfg", "yolov5n.yaml", "--epochs", "1"))


def run_files(run):
    """A run folder's files, its TensorBoard event files by their kind: their names hold the time, host and pid."""
    return sorted(re.sub(r"^events\.out\.tfevents\..*", "events.out.tfevents", str(p.relative_to(run)))
                  for p in run.rglob("*"))


def test_a_distributed_run_writes_what_a_single_process_run_writes(tmp_path, data, tree, single_run):
    project = tmp_path / "runs"
    finish(start(tree, tmp_path / "log.txt", *train_args(tree, data, project, "exp", "--cfg", "yolov5n.yaml",
                                                         "--epochs", "1")))
    assert [p.name for p in project.iterdir()] == ["exp"], "only rank 0 names and creates the run folder"
    run = project / "exp"
    assert run_files(run) == run_files(single_run)
    rows = read_csv(run / "results.csv")
    assert [int(r["epoch"]) for r in rows] == [0], "only rank 0 logs"
    assert float(rows[0]["train/box_loss"]) > 0
    ckpt = tree.ckpt.load_checkpoint(weights(run, "last", tree))
    single = tree.ckpt.load_checkpoint(weights(single_run, "last", tree))
    assert structure(ckpt) == structure(single)
    assert not [k for k in ckpt["model"] if k.startswith("module.")]
    assert ckpt["opt"]["batch_size"] == 8, "--batch-size is the global batch"


def test_distributed_kd_steps_like_one_process_and_resumes(tmp_path, same_images, still_hyp, narrow_cfg, tree,
                                                           single_run):
    """Two processes with half the batch each, their detection loss times the number of processes, averaged
    gradients (student and FGD): the same steps as one process with the whole batch. Killed after its first
    epoch (validation on rank 0 makes each epoch long enough to catch it there), the distributed run resumes under
    the launcher and ends where the single-process run ends."""
    args = ["--mode", "KD", "--teacher", str(weights(single_run, "best", tree)), "--cfg", narrow_cfg,
            "--epochs", "3", "--noautoanchor", "--data", same_images, "--imgsz", "64",
            "--batch-size", "8", "--hyp", still_hyp]
    single = run_single(tree, *args, "--project", str(tmp_path), "--name", "single")
    initial = loop.setup(tree.train.parse_opt([*args, "--project", str(tmp_path / "initial"), "--workers", "0"]),
                         tree.train)
    proc = start(tree, tmp_path / "log.txt", *args, *tree.sync_bn, "--project", str(tmp_path), "--name", "dist")
    last = weights(tmp_path / "dist", "last", tree)
    while not last.exists() and proc.poll() is None and not hung(proc):
        time.sleep(0.02)
    crash(proc)
    assert last.exists(), proc.log.read_text()[-4000:]
    assert tree.ckpt.load_checkpoint(last)["epoch"] < 2, "the run finished before it could be stopped"
    finish(start(tree, tmp_path / "log.txt", "--resume", str(last)))

    rows, single_rows = read_csv(tmp_path / "dist" / "results.csv"), read_csv(single / "results.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    for r, s in zip(rows, single_rows):
        for key in ("train/box_loss", "train/obj_loss", "train/cls_loss", "train/fgd_loss"):
            assert float(r[key]) == pytest.approx(float(s[key]), rel=1e-3), key
    got = tree.ckpt.load_checkpoint(last)
    expected = tree.ckpt.load_checkpoint(weights(single, "last", tree))
    for part, module in (("model", initial.model), ("ema", initial.model), ("fgd", initial.fgd)):
        start_state = {k: as_array(v) for k, v in module.state_dict().items()}
        for k, v in expected[part].items():
            if k.endswith(BUFFERS):
                continue
            want = as_array(v)
            moved = np.abs(want - start_state[k]).max()
            # 1% of how far training moved it: one process's step instead of two would be off by far more
            assert np.abs(as_array(got[part][k]) - want).max() <= 0.01 * moved + 1e-6 * np.abs(want).max() + 1e-9, \
                f"{part} {k}"


def test_the_processes_share_the_data_and_stay_in_step(tmp_path, data, narrow_cfg, tree, single_run):
    """One KD epoch on different images per process: every trained parameter, student and FGD, must come out the
    same on both processes (gradients averaged everywhere), and together they saw every image once. With
    --sync-bn the BatchNorm statistics agree too (without, each process's last update saw only its images)."""
    out = tmp_path / "out"
    out.mkdir()
    args = ["--mode", "KD", "--teacher", str(weights(single_run, "best", tree)), "--cfg", narrow_cfg, "--epochs", "1",
            *tree.sync_bn, *train_args(tree, data, tmp_path, "exp")]
    step = ROOT / "tests" / "helpers" / "distributed_step.py"
    finish(launch(tree, tmp_path / "log.txt", step, tree.name, str(out), *args))
    ranks = [np.load(out / f"rank{r}.npz") for r in range(2)]
    assert all(int(r["world_size"]) == 2 for r in ranks)
    assert sorted(np.concatenate([r["seen"] for r in ranks]).tolist()) == list(range(16))
    keys = sorted((k for k in ranks[0].files if k.startswith(("model/", "fgd/"))), key=lambda k: k.startswith("m"))
    assert any(k.startswith("fgd/align.") for k in keys)
    for k in keys:
        if tree.sync_bn or not k.endswith(BUFFERS):
            np.testing.assert_allclose(ranks[1][k], ranks[0][k], rtol=1e-6, atol=1e-9, err_msg=k)
