"""What the Jittor tree's package does before jittor loads: Jittor's errors are shown despite log_silent, and numpy's
warning about the subnormal flushing that Jittor's -Ofast kernels switch on is not."""
import subprocess
import sys

# isort: off
import YOLOv5Jittor  # noqa: F401  (sets log_silent, which jittor_utils reads once, and installs the error hook)
import jittor_utils
# isort: on
import pytest

from yolocore.config import ROOT


def test_jittors_rerun_request_ends_the_script_with_an_error_not_silently():
    # What jittor/compiler.py logs, then exits with status 0, after rebuilding its core for new compile flags.
    with pytest.raises(SystemExit) as ended:
        jittor_utils.LOG.e("jit_utils updated, please rerun your command.")
    assert ended.value.code == ("Jittor rebuilt its core library (its compiler or compile flags changed): "
                                "jit_utils updated, please rerun your command.")


def test_other_jittor_errors_are_printed(capsys):
    jittor_utils.LOG.e("load parameter ", lambda: "model.0.conv.weight", " failed")
    assert capsys.readouterr().err == "Jittor error: load parameter model.0.conv.weight failed\n"


FLUSH_PROBE = """
import warnings
import numpy as np
import YOLOv5Jittor
import jittor as jt
flushed = (jt.array(np.array([1e-40, 1.0], np.float32)) * 1.0).numpy()[0] == 0
with warnings.catch_warnings(record=True) as caught:
    np.finfo(np.float64), np.finfo(np.float32)  # their first use measures the limits, and numpy warns
print(flushed, len([w for w in caught if "subnormal" in str(w.message)]))
"""


def test_subnormals_flush_after_a_jittor_kernel_and_numpy_does_not_warn_about_it():
    # In a fresh process: numpy measures each float type's limits once, at its first use.
    probe = subprocess.run([sys.executable, "-c", FLUSH_PROBE], cwd=ROOT, capture_output=True, text=True, check=True)
    assert probe.stdout.split() == ["True", "0"]
