"""The Jittor tree links the system's oneDNN where Jittor looks for its own, so CPU convolutions use it."""
import os

import pytest

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
