"""Fixtures shared by several test files, and the markers of the test folders: each test is marked with its folder's
name (core, pytorch, jittor, parity, e2e), and everything under e2e/ is slow too."""
from pathlib import Path

import pytest
import yaml

from yolocore.architecture import initial_weights as initial
from yolocore.config import ROOT


@pytest.fixture(autouse=True)
def initial_weights_generator():
    """Every test builds its models from the same initial weights, whatever ran before it: both trees draw them from the
    generator of yolocore.architecture.initial_weights, which torch.manual_seed and jt.set_global_seed do not reset."""
    initial.seed(0)


@pytest.fixture(scope="module")
def narrow_cfg(tmp_path_factory):
    """yolov5n at width 0.125: a student narrower than its teacher, so FGD trains its align convs."""
    cfg = yaml.safe_load(open(ROOT / "yolocore" / "models" / "yolov5n.yaml"))
    cfg["width_multiple"] = 0.125
    path = tmp_path_factory.mktemp("cfg") / "yolov5p.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def pytest_collection_modifyitems(items):
    for item in items:
        group = Path(item.fspath).parent.name
        item.add_marker(group)
        if group == "e2e":
            item.add_marker("slow")
