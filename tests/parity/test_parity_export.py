"""export.py of the Jittor tree: a .pkl checkpoint goes through the shared format into the PyTorch tree's Model,
whose ONNX graph must predict what this tree's model predicts; the Jittor tree's val.py and detect.py run the
.onnx and give the checkpoint's figures and boxes."""
# isort: off
import ast
import YOLOv5Jittor  # noqa: F401  (sets jittor's CPU build flags, which must be in place before jittor loads)
import jittor as jt  # noqa: F401
# isort: on
import numpy as np
import onnx
import pytest
from detection_rows import assert_same_rows, coco_rows, label_rows

from yolocore.architecture import initial_weights as initial
from yolocore.config import load_data_yaml
from yolocore.data.synthetic import make_synthetic_dataset
from yolocore.deployment.onnx_files import fixed_input, relative_difference
from yolocore.deployment.onnx_model import OnnxModel
from YOLOv5Jittor import detect, export, val
from YOLOv5Jittor.models.yolo import Model
from YOLOv5Jittor.utils.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from YOLOv5Jittor.utils.framework import state_dict_to_numpy


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(make_synthetic_dataset(tmp_path_factory.mktemp("syn"), n_train=4, n_val=8, imgsz=128, seed=4))


@pytest.fixture(scope="module")
def weights(tmp_path_factory, data):
    """An untrained yolov5n in this tree's format, as its train.py writes a network: state dict, yaml, classes."""
    names = load_data_yaml(data)["names"]
    # Seeded here: a module's fixture is built before the per-test seeding (conftest), so its weights would depend
    # on the tests that ran before, and some weights put a detection right at val.py's confidence threshold.
    initial.seed(0)
    model = Model("yolov5n.yaml", nc=len(names))
    path = tmp_path_factory.mktemp("weights") / "best.pkl"
    save_checkpoint({"model": state_dict_to_numpy(model.state_dict()), "yaml": model.yaml, "nc": len(names),
                     "names": names}, path)
    return path


def export_onnx(weights, *flags, imgsz=64):
    return export.main(export.parse_opt(["--weights", str(weights), "--imgsz", str(imgsz), "--device", "cpu",
                                         *flags]))


def model_predictions(weights, images):
    return export.predict(model_from_checkpoint(load_checkpoint(weights)), images)


def test_export_of_a_jittor_checkpoint_predicts_what_the_jittor_model_predicts(weights, data):
    path = export_onnx(weights)
    assert path == weights.with_suffix(".onnx")
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    names = dict(enumerate(load_data_yaml(data)["names"]))
    assert metadata["stride"] == "32" and ast.literal_eval(metadata["names"]) == names
    image = fixed_input(64)
    assert relative_difference(OnnxModel(path).predict(image), model_predictions(weights, image)) < 1e-4


def test_dynamic_export_of_a_jittor_checkpoint_takes_other_shapes(weights):
    onnx_model = OnnxModel(export_onnx(weights, "--dynamic"))
    images = np.random.default_rng(1).random((2, 3, 96, 160), dtype=np.float32)
    assert relative_difference(onnx_model.predict(images), model_predictions(weights, images)) < 1e-4


def test_jittor_val_and_detect_give_the_checkpoints_figures_and_boxes_from_a_dynamic_export(tmp_path, weights, data):
    onnx_path = export_onnx(weights, "--dynamic")
    results, predictions = [], []
    for w, name in ((weights, "checkpoint"), (onnx_path, "onnx")):
        results.append(val.main(val.parse_opt(["--weights", str(w), "--data", data, "--imgsz", "64", "--workers", "0",
                                               "--project", str(tmp_path), "--name", name, "--save-json"])))
        predictions.append(coco_rows(tmp_path / name))
    np.testing.assert_allclose(results[1], results[0], atol=1e-6)
    # An untrained model's mAP is 0: the detections val.py scored carry the comparison.
    assert_same_rows(*predictions, atol=1e-4)
    source = data.replace("synthetic.yaml", "images/val")
    boxes = []
    for w in (weights, onnx_path):
        out = detect.main(detect.parse_opt(["--weights", str(w), "--source", source, "--imgsz", "64",
                                            "--conf-thres", "0.001", "--save-txt", "--save-conf",
                                            "--project", str(tmp_path / "detect")]))
        boxes.append(label_rows(out))
    assert_same_rows(*boxes, atol=2e-5)
