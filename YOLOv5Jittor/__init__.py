"""Jittor tree. Jittor reads its build settings from the environment once, at its first import, so the CPU
defaults are set here, before any module of this package imports jittor; values the user exported win."""
import glob
import os
import sys
import warnings

# A CUDA toolkit without a GPU (or its runtime) makes jittor's import fail while probing CUDA: build for the CPU.
if not glob.glob("/dev/nvidia[0-9]*"):
    os.environ.setdefault("nvcc_path", "")


def _link_system_onednn(jittor_lib):
    """Jittor's CPU convolutions run on one thread (~70x slower) unless it finds oneDNN in its cache folder, where it
    would otherwise download its own. The system's (Debian: apt-get install libdnnl-dev) builds with its ops when
    linked in there; the headers come from /usr/include. Returns whether oneDNN is in place."""
    if os.path.exists(jittor_lib):
        return True
    system_lib = "/usr/lib/x86_64-linux-gnu/libdnnl.so.2"
    if not (os.path.exists(system_lib) and os.path.exists("/usr/include/dnnl.hpp")):
        return False
    try:
        os.makedirs(os.path.join(os.path.dirname(os.path.dirname(jittor_lib)), "include"), exist_ok=True)
        os.makedirs(os.path.dirname(jittor_lib), exist_ok=True)
        os.symlink(system_lib, jittor_lib)
    except OSError:
        return os.path.exists(jittor_lib)
    return True


# Jittor builds its CPU kernels with -Ofast, and loading one sets the whole process to flush subnormal floats to
# zero; numpy then warns, once, that float64's smallest subnormal is zero. Expected here (QuestionAndAnswer.md).
warnings.filterwarnings("ignore", message="The value of the smallest subnormal", category=UserWarning)

os.environ.setdefault("log_silent", "1")
import jittor_utils  # noqa: E402  (reads log_silent; light: it compiles nothing)


def _log_error(*msg):
    """Jittor's error lines, which log_silent would hide with its chatter. One ends the process: when its compile
    flags change, Jittor rebuilds its core during the import, logs that the command must be run again and exits
    with status 0, which left a script silent and apparently successful."""
    text = "".join(str(m() if callable(m) else m) for m in msg)
    if "please rerun" in text:
        raise SystemExit(f"Jittor rebuilt its core library (its compiler or compile flags changed): {text}")
    print(f"Jittor error: {text}", file=sys.stderr)


jittor_utils.LOG.e = _log_error

# use_mkl=1 without oneDNN in place makes jittor download one (offline: the import fails). Jittor's home is
# $JITTOR_HOME, else the one it recorded the last time JITTOR_HOME was set, else ~.
_ONEDNN = os.path.join(jittor_utils.home(), ".cache/jittor/mkl/dnnl_lnx_2.2.0_cpu_gomp/lib/libmkldnn.so")
if "use_mkl" not in os.environ:
    os.environ["use_mkl"] = "1" if _link_system_onednn(_ONEDNN) else "0"
