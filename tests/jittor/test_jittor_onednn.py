"""The Jittor tree links the system's oneDNN where Jittor looks for its own, so CPU convolutions use it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from yolocore.config import ROOT
from YOLOv5Jittor import _link_system_onednn

SYSTEM_LIB = "/usr/lib/x86_64-linux-gnu/libdnnl.so.2"


@pytest.mark.skipif(not os.path.exists(SYSTEM_LIB), reason="libdnnl-dev is not installed")
def test_system_onednn_is_linked_into_jittors_folder(tmp_path):
    target = tmp_path / "mkl" / "dnnl_lnx_2.2.0_cpu_gomp" / "lib" / "libmkldnn.so"
    assert _link_system_onednn(str(target))
    assert os.path.realpath(target) == os.path.realpath(SYSTEM_LIB)
    assert (tmp_path / "mkl" / "dnnl_lnx_2.2.0_cpu_gomp" / "include").is_dir()
    assert _link_system_onednn(str(target)), "an existing link is kept"


def test_without_system_onednn_nothing_is_created(tmp_path, monkeypatch):
    monkeypatch.setattr(os.path, "exists", lambda p: False)
    target = tmp_path / "lib" / "libmkldnn.so"
    assert not _link_system_onednn(str(target))
    assert not (tmp_path / "lib").exists()


def test_onednn_goes_to_the_home_jittor_recorded(tmp_path):
    """Jittor keeps using the JITTOR_HOME it was last given (recorded in ~/.cache/jittor/config.json), and looks for
    oneDNN there: a link under ~ would leave it downloading its own."""
    recorded = tmp_path / "elsewhere"
    (tmp_path / ".cache" / "jittor").mkdir(parents=True)
    (tmp_path / ".cache" / "jittor" / "config.json").write_text(json.dumps({"JITTOR_HOME": str(recorded)}))
    env = {k: v for k, v in os.environ.items() if k not in ("JITTOR_HOME", "use_mkl")}
    found = subprocess.run([sys.executable, "-c", "import YOLOv5Jittor; print(YOLOv5Jittor._ONEDNN)"], cwd=ROOT,
                           env={**env, "HOME": str(tmp_path)}, capture_output=True, text=True, check=True)
    assert Path(found.stdout.strip()).is_relative_to(recorded / ".cache" / "jittor" / "mkl")
    if os.path.exists(SYSTEM_LIB):
        assert os.path.realpath(found.stdout.strip()) == os.path.realpath(SYSTEM_LIB)
