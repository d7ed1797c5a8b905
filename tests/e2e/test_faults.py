"""Faults a hostile user tries (issue 33), in both trees: two runs in one folder, a trainer killed with kill -9, an
output folder that cannot be written, a converter killed mid-write, a label file without its image, and the stale
anchor grid that KD's probe used to leave in the student and its EMA. Runs are tiny (imgsz 64, 16 images) and run
as processes of their own where the fault is about processes; each process group is killed in a finally block."""
import contextlib
import fcntl
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from processes import process_tree

import YOLOv5Jittor  # noqa: F401  (sets jittor's CPU build flags before anything imports jittor)
from yolocore.cli import run_script
from yolocore.config import ROOT, load_hyp
from yolocore.data.dataset import YoloDataset
from yolocore.data.synthetic import make_synthetic_dataset
from yolocore.training.run_folder import RunFolder
from YOLOv5Jittor import detect as jittor_detect
from YOLOv5Jittor import train as jittor_train
from YOLOv5Pytorch import detect as pytorch_detect
from YOLOv5Pytorch import train as pytorch_train

TREES = pytest.mark.parametrize("tree", ["YOLOv5Pytorch", "YOLOv5Jittor"])
MODULES = {"YOLOv5Pytorch": (pytorch_train, pytorch_detect), "YOLOv5Jittor": (jittor_train, jittor_detect)}
STARTUP_S = 300  # a cold Jittor kernel cache compiles for minutes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(make_synthetic_dataset(tmp_path_factory.mktemp("syn"), n_train=16, n_val=8, imgsz=128, seed=1))


def train_command(tree, data, project, *args):
    return [sys.executable, str(ROOT / tree / "train.py"), "--cfg", "yolov5n.yaml", "--data", data, "--imgsz", "64",
            "--batch-size", "8", "--noval", "--project", str(project), "--name", "same", "--exist-ok", *args]


# Runs under a shell that waits for them: this test process imports Jittor, whose SIGCHLD handler ends the process
# when a child of its own dies of a signal other than SIGTERM (kill -9 included).
SHELL = ["sh", "-c", '"$@" >"$0" 2>&1 & echo $!; wait $!']


@contextlib.contextmanager
def started(command, log):
    """command in a session of its own, its output in log; yields (its shell, its pid). It and every process of its
    group are killed after."""
    shell = subprocess.Popen([*SHELL, str(log), *command], stdout=subprocess.PIPE, text=True, start_new_session=True,
                             env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
    try:
        yield shell, int(shell.stdout.readline())
    finally:
        shell.terminate()
        shell.wait()
        shell.stdout.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)


def wait_for(condition, shell, log, timeout=STARTUP_S):
    deadline = time.time() + timeout
    while not condition():
        assert shell.poll() is None, f"the run ended early:\n{Path(log).read_text()[-3000:]}"
        assert time.time() < deadline, f"timed out:\n{Path(log).read_text()[-3000:]}"
        time.sleep(0.5)


def run(command, timeout=STARTUP_S):
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))


def assert_one_line_error(result, *words):
    """A failed script: no traceback, and a last line that names each of words."""
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert all(w in last for w in words), last
    return last


@TREES
def test_a_second_run_in_a_held_folder_stops_and_a_killed_run_frees_it(tmp_path, data, tree):
    """Two runs with one --name and --exist-ok appended their rows to one results.csv and overwrote each other's
    weights (in PyTorch, one died renaming the other's best.pt.tmp). The second now stops at once, naming the folder
    and the first run's process, as does --resume of a run still training; a kill -9 frees the folder."""
    folder = tmp_path / "same"
    log = tmp_path / "1.log"
    with started(train_command(tree, data, tmp_path, "--epochs", "300", "--workers", "0"), log) as (shell, pid):
        wait_for(lambda: (folder / "weights" / f"last{MODULES[tree][0].SUFFIX}").is_file(), shell, log)
        second = run(train_command(tree, data, tmp_path, "--epochs", "1", "--workers", "0", "--seed", "2"))
        assert_one_line_error(second, str(folder), "in use by another run", f"process {pid}")
        resumed = run([sys.executable, str(ROOT / tree / "train.py"), "--resume", str(folder), "--workers", "0"])
        assert_one_line_error(resumed, str(folder), f"process {pid}")
        assert shell.poll() is None, "the first run goes on"
        os.kill(pid, signal.SIGKILL)
        shell.wait()
    RunFolder(folder).release()  # kill -9 left the folder free: the killed run can be resumed


def test_runs_with_different_names_hold_their_own_folders(tmp_path):
    """The study runs teacher, student and FGD student under one --project; a folder's lock is its own."""
    a, b = RunFolder(tmp_path / "a"), RunFolder(tmp_path / "b")
    with pytest.raises(ValueError, match=f"{tmp_path / 'a'}: in use by another run \\(process {os.getpid()}\\)"):
        RunFolder(tmp_path / "a")
    a.release()
    b.release()
    RunFolder(tmp_path / "a").release()


WRITER = """
import sys
sys.path.insert(0, {root!r})
{imports}
for i in range(300):
    save_checkpoint({{"i": i, "pid": {tag}}}, {path!r})
"""


@pytest.mark.parametrize("tree", ["YOLOv5Pytorch", "yolocore"])
def test_two_processes_writing_one_checkpoint_never_rename_each_others_file(tmp_path, tree):
    """Both trees wrote through path + '.tmp': one process renamed the other's file away, and the other failed
    ('No such file or directory: best.pt.tmp -> best.pt'). The PyTorch tree's torch.save and the Jittor tree's
    pickle (yolocore's write_pickle_checkpoint) each write their own temporary file now."""
    imports = {"YOLOv5Pytorch": "from YOLOv5Pytorch.utils.checkpoint import save_checkpoint",
               "yolocore": "from yolocore.training.checkpoints import write_pickle_checkpoint as save_checkpoint"}
    path = tmp_path / "best.ckpt"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(ROOT), imports=imports[tree], tag=k,
                                                                     path=str(path))], stderr=subprocess.PIPE,
                                text=True, start_new_session=True) for k in range(2)]
    try:
        errors = [w.communicate(timeout=STARTUP_S)[1] for w in writers]
    finally:
        for w in writers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(w.pid, signal.SIGKILL)
            w.wait()
    assert [w.returncode for w in writers] == [0, 0], errors
    assert [f.name for f in tmp_path.iterdir()] == ["best.ckpt"]


def shared_memory_files(pids):
    """The /dev/shm files that these processes map (the Jittor tree's batch slots; PyTorch unlinks its own)."""
    files = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            files.update(line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
                         if "/dev/shm/" in line and not line.endswith("(deleted)"))
    return files


def running(pid):
    """Alive and not a zombie (a zombie holds no memory; its parent or init reaps it)."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def worker_count(pid):
    """Processes under pid started by a fork server: the server and its data-loading workers."""
    count = 0
    for p in process_tree(pid)[1:]:
        with contextlib.suppress(OSError):
            count += b"multiprocessing.forkserver" in Path(f"/proc/{p}/cmdline").read_bytes()
    return count


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads processes from /proc")
@TREES
def test_a_trainer_killed_with_kill_9_leaves_no_process_and_no_shared_memory(tmp_path, data, tree):
    """kill -9 of a PyTorch trainer with --workers 2 left its fork server, its resource tracker and both workers
    running for good (600 MB): each worker held the server's liveness pipe, and watched the server, its parent.
    Each worker now ends with its trainer, and the rest follows within seconds."""
    log = tmp_path / "train.log"
    with started(train_command(tree, data, tmp_path, "--epochs", "300", "--workers", "2"), log) as (shell, pid):
        wait_for(lambda: worker_count(pid) >= 3, shell, log)  # the server and two workers
        pids = process_tree(pid)
        shm = shared_memory_files(pids)
        os.kill(pid, signal.SIGKILL)
        shell.wait()
        deadline = time.time() + 10
        while any(map(running, pids)) and time.time() < deadline:
            time.sleep(0.2)
        left = [Path(f"/proc/{p}/cmdline").read_bytes()[:120] for p in pids if running(p)]
        assert not left, f"still running after kill -9 of the trainer: {left}"
        assert not [f for f in shm if Path(f).exists()], "shared memory left in /dev/shm"


@TREES
def test_an_unwritable_project_is_one_line_naming_it(tmp_path, data, tree):
    """A --project that cannot be created (here under a file, as root can write anywhere else; a read-only mount
    fails the same way) ended in a 28-line double traceback after the data was read."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run(train_command(tree, data, blocker / "P", "--epochs", "1", "--workers", "0"))
    assert_one_line_error(result, "train.py: error:", str(blocker / "P"), "Not a directory")
    assert blocker.is_file()


@TREES
def test_detect_into_an_unwritable_project_is_one_line_naming_it(tmp_path, data, tree, monkeypatch):
    train, detect = MODULES[tree]
    model = train.new_model("yolov5n.yaml", 1, "cpu")
    weights = tmp_path / f"w{train.SUFFIX}"
    train.save_checkpoint({"model": train.saved_state(model), "ema": None, "yaml": model.yaml, "nc": 1,
                           "names": ["a"]}, weights)
    blocker = tmp_path / "file"
    blocker.write_text("")
    opt = detect.parse_opt(["--weights", str(weights), "--source", str(Path(data).parent / "images" / "val"),
                            "--imgsz", "64", "--project", str(blocker / "P")])
    monkeypatch.setattr(sys, "argv", ["detect.py"])
    with pytest.raises(SystemExit) as exit_:
        run_script(lambda: detect.main(opt))
    message = str(exit_.value)
    assert message.startswith(f"detect.py: error: {blocker / 'P'}") and message.endswith(": Not a directory"), message


_spec = importlib.util.spec_from_file_location("transform_nwpu", ROOT / "data" / "transform_nwpu.py")
nwpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nwpu)

KILLED_CONVERTER = """
import os, sys
sys.path.insert(0, {root!r})
import importlib.util
spec = importlib.util.spec_from_file_location("transform_nwpu", {script!r})
nwpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(nwpu)
place = nwpu.place_image
def place_and_die(*args):
    place(*args)
    os.kill(os.getpid(), 9)  # as kill -9 mid-write: no clean-up runs
nwpu.place_image = place_and_die
nwpu.main([{src!r}, "--out", {out!r}, "--copy"])
"""


def raw_nwpu(root, n=10):
    src = root / "NWPU VHR-10 dataset"
    for d in (nwpu.POSITIVE_DIR, nwpu.GROUND_TRUTH_DIR):
        (src / d).mkdir(parents=True)
    for i in range(1, n + 1):
        cv2.imwrite(str(src / nwpu.POSITIVE_DIR / f"{i:03d}.jpg"), np.full((50, 100, 3), 10 * i, np.uint8))
        (src / nwpu.GROUND_TRUTH_DIR / f"{i:03d}.txt").write_text("(10,10),(40,30),1\n")
    return src


def test_the_converter_removes_a_killed_runs_temporary_folder_and_keeps_a_running_ones(tmp_path, capsys):
    """kill -9 of the converter left .OUT.tmp-* (with image copies under --copy) beside --out for good. The next run
    removes it and says so; a temporary folder whose conversion is still running (locked) stays."""
    src, out = raw_nwpu(tmp_path), tmp_path / "NWPU"
    killed = subprocess.run([*SHELL, str(tmp_path / "killed.log"), sys.executable, "-c", KILLED_CONVERTER.format(
        root=str(ROOT), script=str(ROOT / "data" / "transform_nwpu.py"), src=str(src), out=str(out))], timeout=120,
        capture_output=True)
    assert killed.returncode == 128 + signal.SIGKILL
    (leftover,) = tmp_path.glob(".NWPU.tmp-*")
    assert any(leftover.rglob("*.jpg")), "the killed run had copied an image"
    running_one = tmp_path / ".NWPU.tmp-running"
    running_one.mkdir()
    lock = os.open(running_one, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert nwpu.main([str(src), "--out", str(out), "--copy"]) == 0
        assert f"removed {leftover}, the temporary folder of an interrupted conversion" in capsys.readouterr().out
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".NWPU")) == [running_one.name]
    finally:
        os.close(lock)
    assert len(list((out / "images").rglob("*.jpg"))) == 10


def test_the_converter_into_an_unwritable_folder_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert nwpu.main([str(raw_nwpu(tmp_path)), "--out", str(blocker / "NWPU")]) == 2
    err = capsys.readouterr().err
    assert err.strip().startswith(f"error: cannot write beside {blocker / 'NWPU'}: {blocker}: "), err
    assert len(err.strip().splitlines()) == 1, err


def test_a_label_file_without_an_image_is_counted_and_named(tmp_path, capsys):
    """A label whose image was lost or renamed was ignored silently, the summary saying '0 missing images'."""
    data = make_synthetic_dataset(tmp_path / "syn", n_train=4, n_val=2, imgsz=64, seed=1).parent
    ghost = data / "labels" / "train" / "ghost.txt"
    ghost.write_text("0 0.5 0.5 0.2 0.2\n")
    ds = YoloDataset(data / "images" / "train", imgsz=64, nc=5, cache=False, prefix="train: ")
    assert len(ds) == 4 and ds.stats["labels_without_images"] == 1
    assert f"{ghost}: label file without an image (ignored)" in ds.messages
    out = capsys.readouterr().out
    assert "1 label files without an image" in out and f"WARNING {ghost}" in out


def scaled_anchors(tree, det):
    """The student's anchors changed after the probe, as AutoAnchor changes them (each tree's own write)."""
    if tree == "YOLOv5Pytorch":
        with torch.no_grad():
            det.anchors[:] = det.anchors * 1.5
    else:
        det.anchors.update(det.anchors * 1.5)


@TREES
def test_kd_probe_leaves_no_stale_anchor_grid_in_the_student_or_its_ema(tree):
    """build_fgd probes the student in eval mode at imgsz x imgsz before AutoAnchor: the grids it cached kept the old
    anchors, and the EMA copied them, so a square imgsz input decoded boxes with the wrong anchors."""
    train = MODULES[tree][0]
    hyp = load_hyp(train.TREE / "hyp.scratch-low.yaml", kd=True, verbose=False)
    student, teacher = train.new_model("yolov5n.yaml", 2, "cpu"), train.new_model("yolov5n.yaml", 2, "cpu").eval()
    train.build_fgd(student, teacher, [17, 20, 23], hyp, 64, "cpu")
    scaled_anchors(tree, student.model[-1])
    ema = train.ModelEMA(student).ema
    fresh = train.new_model("yolov5n.yaml", 2, "cpu")
    fresh.load_state_dict(ema.state_dict())
    fresh.eval()
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    if tree == "YOLOv5Pytorch":
        with torch.no_grad():
            got, want = ema(torch.from_numpy(x))[0].numpy(), fresh(torch.from_numpy(x))[0].numpy()
    else:
        import jittor as jt  # here, not at the top: isort would put it before YOLOv5Jittor, which sets its flags

        with jt.no_grad():
            got, want = ema(jt.array(x))[0].numpy(), fresh(jt.array(x))[0].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
