"""Where a run trained and for how long, kept in every checkpoint it writes (key "training"), so that any run folder,
a study's or one trained by hand, reports its time per epoch and its device (yolocore.study.report).

The record counts the epochs the checkpoint holds and the wall seconds they took (training and validation), over
every start of the run: a resumed run continues its checkpoint's record, so an epoch lost to a crash is in neither
count."""
import os
import platform
import subprocess
from pathlib import Path


def describe_device(device, processes=1, amp=False):
    """The GPU's name, or the CPU's model and core count; 'N x ...' for N processes (torchrun, mpirun); ', AMP' when
    it trains in mixed precision, so that reports tell such runs from float32 ones."""
    if str(device).startswith("cuda"):
        index = str(device).partition(":")[2] or "0"
        try:
            name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", index],
                                  capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            name = ""
        name = name or "CUDA GPU"
    else:
        model = platform.processor() or platform.machine()
        cpuinfo = Path("/proc/cpuinfo")
        if cpuinfo.is_file():
            lines = [ln for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
            model = lines[0].split(":", 1)[1].strip() if lines else model
        name = f"CPU, {os.cpu_count()} cores ({model})"
    name += ", AMP" if amp else ""
    return f"{processes} x {name}" if processes > 1 else name


def training_record(ckpt, device):
    """The record a run starts with: its checkpoint's when it resumes (a checkpoint of an older tree has none, so
    only the epochs trained from here count), and this device, added to the earlier one when they differ."""
    earlier = (ckpt or {}).get("training") or {}
    devices = earlier.get("device", "")
    if device not in devices.split(", then "):
        devices = f"{devices}, then {device}" if devices else device
    return {"device": devices, "epochs": earlier.get("epochs", 0), "seconds": earlier.get("seconds", 0.0)}


def add_epoch(record, seconds):
    record["epochs"] += 1
    record["seconds"] = round(record["seconds"] + seconds, 3)


def epoch_seconds(record):
    """Mean seconds per recorded epoch, or None when nothing was timed."""
    record = record or {}
    return record["seconds"] / record["epochs"] if record.get("epochs") else None
