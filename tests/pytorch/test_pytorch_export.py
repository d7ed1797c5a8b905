"""export.py of the PyTorch tree: an .onnx beside the checkpoint with ultralytics' metadata, ONNX Runtime's predictions
equal to the model's, val.py and detect.py giving the checkpoint's figures and boxes from it, and the errors."""
import ast
import importlib.util

import numpy as np
import onnx
import pytest
import torch
from detection_rows import assert_same_rows, coco_rows, label_rows

from yolocore.architecture import initial_weights as initial
from yolocore.cli import MissingPackageError
from yolocore.config import load_data_yaml
from yolocore.data.synthetic import make_synthetic_dataset
from yolocore.deployment.onnx_files import fixed_input, relative_difference
from yolocore.deployment.onnx_model import OnnxModel
from YOLOv5Pytorch import detect, export, val
from YOLOv5Pytorch.models.yolo import Model
from YOLOv5Pytorch.utils.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(make_synthetic_dataset(tmp_path_factory.mktemp("syn"), n_train=4, n_val=8, imgsz=128, seed=4))


@pytest.fixture(scope="module")
def weights(tmp_path_factory, data):
    """An untrained yolov5n, as train.py's checkpoints hold a network: its state dict, yaml and classes."""
    names = load_data_yaml(data)["names"]
    # Seeded here: a module's fixture is built before the per-test seeding (conftest), so its weights would depend
    # on the tests that ran before, and some weights put a detection right at val.py's confidence threshold.
    initial.seed(0)
    model = Model("yolov5n.yaml", nc=len(names))
    path = tmp_path_factory.mktemp("weights") / "best.pt"
    save_checkpoint({"model": model.state_dict(), "yaml": model.yaml, "nc": len(names), "names": names}, path)
    return path


def export_onnx(weights, *flags, imgsz=64):
    return export.main(export.parse_opt(["--weights", str(weights), "--imgsz", str(imgsz), "--device", "cpu",
                                         *flags]))


def model_predictions(weights, images):
    model = model_from_checkpoint(load_checkpoint(weights))
    return export.predict(model, images)


def test_export_writes_best_onnx_with_names_and_stride_and_the_models_predictions(weights, data):
    path = export_onnx(weights)
    assert path == weights.with_suffix(".onnx")
    graph = onnx.load(str(path))
    metadata = {p.key: p.value for p in graph.metadata_props}
    names = dict(enumerate(load_data_yaml(data)["names"]))
    assert metadata["stride"] == "32" and ast.literal_eval(metadata["names"]) == names
    assert [o.name for o in graph.graph.output] == ["output0"]
    onnx_model = OnnxModel(path)
    assert onnx_model.fixed_shape == (1, 64) and onnx_model.names == load_data_yaml(data)["names"]
    image = fixed_input(64)
    assert relative_difference(onnx_model.predict(image), model_predictions(weights, image)) < 1e-4


def test_dynamic_export_takes_other_batches_and_shapes(weights):
    onnx_model = OnnxModel(export_onnx(weights, "--dynamic"))
    assert onnx_model.fixed_shape is None
    images = np.random.default_rng(1).random((2, 3, 96, 160), dtype=np.float32)
    assert relative_difference(onnx_model.predict(images), model_predictions(weights, images)) < 1e-4


def test_half_export_takes_float16_images(weights):
    onnx_model = OnnxModel(export_onnx(weights, "--half"))
    assert onnx_model.dtype == np.float16
    image = fixed_input(64)
    assert relative_difference(onnx_model.predict(image), model_predictions(weights, image)) < 1e-2


def test_an_fgd_students_export_holds_the_student_alone(tmp_path, weights):
    """FGD's align convs and GcBlocks are in the checkpoint beside the student, never in its graph."""
    plain = onnx.load(str(export_onnx(weights)))
    fgd_state = {f"fgd.align.{i}.weight": torch.ones(8, 8, 1, 1) for i in range(3)}
    student = tmp_path / "best.pt"
    save_checkpoint({**torch.load(weights, weights_only=True), "fgd": fgd_state, "kd_layers": [17, 20, 23]}, student)
    distilled = onnx.load(str(export_onnx(student)))
    assert ([(t.name, t.raw_data) for t in distilled.graph.initializer]
            == [(t.name, t.raw_data) for t in plain.graph.initializer])
    assert len(distilled.graph.node) == len(plain.graph.node)


def test_val_and_detect_give_the_checkpoints_figures_and_boxes_from_a_dynamic_export(tmp_path, weights, data):
    onnx_path = export_onnx(weights, "--dynamic")
    results, predictions = [], []
    for w, name in ((weights, "checkpoint"), (onnx_path, "onnx")):
        results.append(val.main(val.parse_opt(["--weights", str(w), "--data", data, "--imgsz", "64", "--workers", "0",
                                               "--device", "cpu", "--project", str(tmp_path), "--name", name,
                                               "--save-json"])))
        predictions.append(coco_rows(tmp_path / name))
    np.testing.assert_allclose(results[1], results[0], atol=1e-6)
    # An untrained model's mAP is 0: the detections val.py scored carry the comparison.
    assert_same_rows(*predictions, atol=1e-4)
    source = data.replace("synthetic.yaml", "images/val")
    boxes = []
    for w in (weights, onnx_path):
        out = detect.main(detect.parse_opt(["--weights", str(w), "--source", source, "--imgsz", "64", "--device",
                                            "cpu", "--conf-thres", "0.001", "--save-txt", "--save-conf",
                                            "--project", str(tmp_path / "detect")]))
        boxes.append(label_rows(out))
    assert_same_rows(*boxes, atol=2e-5)


def test_val_runs_a_static_export_on_square_single_images_as_the_checkpoint_would(tmp_path, weights, data):
    onnx_path = export_onnx(weights)
    model = model_from_checkpoint(load_checkpoint(weights))
    names = load_data_yaml(data)["names"]
    loader, _ = val.create_dataloader(load_data_yaml(data)["val"], 64, 1, len(names), workers=0)
    (tmp_path / "checkpoint").mkdir()
    expected, _ = val.run(model, loader, names, torch.device("cpu"), save_dir=tmp_path / "checkpoint", save_json=True)
    actual = val.main(val.parse_opt(["--weights", str(onnx_path), "--data", data, "--imgsz", "64", "--workers", "0",
                                     "--device", "cpu", "--project", str(tmp_path), "--name", "onnx", "--save-json"]))
    np.testing.assert_allclose(actual, expected, atol=1e-6)
    assert_same_rows(coco_rows(tmp_path / "checkpoint"), coco_rows(tmp_path / "onnx"), atol=1e-4)


def test_export_errors_name_the_problem(tmp_path, weights, monkeypatch, capsys):
    with pytest.raises(ValueError, match="must be a multiple of the model stride 32"):
        export_onnx(weights, imgsz=100)
    not_a_model = tmp_path / "results.pt"
    torch.save({"epoch": 3}, not_a_model)
    with pytest.raises(ValueError, match="results.pt"):
        export_onnx(not_a_model)
    with pytest.raises(SystemExit):
        export.parse_opt(["--weights", str(weights), "--half", "--dynamic"])
    assert "--half and --dynamic do not go together" in capsys.readouterr().err
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else
                        find_spec(name, *a))
    with pytest.raises(MissingPackageError, match="pip install onnxruntime"):
        export_onnx(weights)
