"""Jittor tree. Jittor reads its build settings from the environment once, at its first import, so the CPU
defaults are set here, before any module of this package imports jittor; values the user exported win."""
import glob
import os

# A CUDA toolkit without a GPU (or its runtime) makes jittor's import fail while probing CUDA: build for the CPU.
if not glob.glob("/dev/nvidia[0-9]*"):
    os.environ.setdefault("nvcc_path", "")
# use_mkl=1 without a oneDNN install makes jittor download one (offline: the import fails). The folder below is
# where jittor looks; a link to the system libdnnl there (see README) makes CPU convs ~70x faster.
_ONEDNN = os.path.join(os.environ.get("JITTOR_HOME", os.path.expanduser("~")),
                       ".cache/jittor/mkl/dnnl_lnx_2.2.0_cpu_gomp/lib/libmkldnn.so")
os.environ.setdefault("use_mkl", "1" if os.path.exists(_ONEDNN) else "0")
os.environ.setdefault("log_silent", "1")
