"""A training run holds its folder: one run at a time writes results.csv and the checkpoints of a folder.

Two runs in one folder (the same --name with --exist-ok, or --resume of a run still training) would append to one
results.csv and overwrite each other's weights. The first run takes an exclusive flock on a file in the folder
before it writes anything; the kernel drops the lock when the process ends, however it ends (kill -9 included),
so a killed run can be resumed at once."""
import contextlib
import fcntl
import os
import shutil
from pathlib import Path

LOCK_NAME = ".lock"


class RunFolderBusy(ValueError):
    """Another process holds the run folder; the message names the folder and that process."""


class RunFolder:
    """The lock on a run folder, created (with its parents) if it does not exist yet."""

    def __init__(self, path):
        self.path = Path(path)
        self.created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        # Not truncated on open: the holder's pid stays readable until this process holds the lock. A file
        # object, not a bare descriptor: a Run dropped without release() (setup called alone) frees the folder.
        self.file = open(self.path / LOCK_NAME, "a+", encoding="utf-8")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise RunFolderBusy(f"{self.path}: in use by another run (process {holder}); wait for it to end, or "
                                "choose another --name") from None
        self.file.truncate(0)
        self.file.write(f"{os.getpid()}\n")
        self.file.flush()

    def release(self):
        """Frees the folder for another run (the lock file stays: removing it would let two runs lock two files)."""
        self.file.close()

    def abandon(self):
        """After a failed start: frees the folder, and removes it where this run created it and wrote nothing else."""
        self.release()
        with contextlib.suppress(OSError):
            if self.created and [p.name for p in self.path.iterdir()] == [LOCK_NAME]:
                shutil.rmtree(self.path)
