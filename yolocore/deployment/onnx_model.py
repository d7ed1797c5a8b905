"""An exported .onnx run by ONNX Runtime in place of a checkpoint's network, for val.py and detect.py in either
tree (each tree's utils/checkpoint.py wraps it to take and return its tensors), as ultralytics' DetectMultiBackend
runs one. No framework here: ONNX Runtime takes and returns numpy arrays."""
import ast
import importlib
import importlib.util
from pathlib import Path

import numpy as np

from yolocore.cli import MissingPackageError


def require(*packages, purpose="ONNX export"):
    """The imported packages; a missing one ends the script with the pip command that installs it."""
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise MissingPackageError(f"{purpose} needs {', '.join(missing)}: pip install {' '.join(missing)} "
                                  "(the versions in requirements.txt)")
    return [importlib.import_module(p) for p in packages]


def read_metadata(metadata, path):
    """(class names, stride) from an ONNX model's custom metadata; an .onnx without them was not exported here or
    by ultralytics, and cannot say which classes it predicts."""
    if "names" not in metadata or "stride" not in metadata:
        raise ValueError(f"{path}: no class names and stride in its metadata; export it with export.py")
    names = ast.literal_eval(metadata["names"])
    return [names[i] for i in sorted(names)], int(metadata["stride"])


class OnnxModel:
    """The graph export.py wrote: predictions (bs, anchors, 5 + nc) of images (bs, 3, h, w) in [0, 1], with the
    class names and stride of its metadata. ONNX Runtime runs it on the CPU."""

    def __init__(self, path, to_numpy=np.asarray, to_tensor=None):
        """to_numpy(a tree's images) and to_tensor(predictions, the images) let val.py and detect.py call the model
        with their tree's tensors."""
        self.to_numpy, self.to_tensor = to_numpy, to_tensor
        (ort,) = require("onnxruntime", purpose="Running an .onnx model")
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such file")
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # ONNX Runtime raises its own classes for a file that is not a model it can run
            raise ValueError(f"{path}: not an ONNX model ONNX Runtime can run ({type(e).__name__}: {e})") from e
        self.names, stride = read_metadata(self.session.get_modelmeta().custom_metadata_map, path)
        self.stride = np.array([stride], np.float32)
        image = self.session.get_inputs()[0]
        self.input_name = image.name
        self.dtype = np.float16 if image.type == "tensor(float16)" else np.float32
        batch, _, height, width = image.shape
        # A static export takes one shape only (named dimensions are --dynamic ones); None when any shape works.
        self.fixed_shape = (batch, height) if all(isinstance(d, int) for d in (batch, height, width)) else None

    def eval(self):
        return self

    def __call__(self, im):
        """As Model in eval mode: (predictions, training maps), the maps None (the graph holds the predictions only,
        and val.py needs the maps for losses during training alone), in the tree's tensors (see __init__)."""
        return self.to_tensor(self.predict(self.to_numpy(im)), im), None

    def predict(self, images):
        """Predictions (bs, anchors, 5 + nc) float32 of a numpy batch, in the precision the graph was exported in."""
        return self.session.run(None, {self.input_name: np.asarray(images, self.dtype)})[0].astype(np.float32)


def inference_shape(model, imgsz, batch_size):
    """(imgsz, batch_size, rect) to run a model at. A static export takes square images of its size, one batch
    size, as ultralytics runs exported models; a checkpoint's network or a --dynamic export takes the options and
    YOLOv5's rectangles (rect), so it gives the checkpoint's own boxes and mAP."""
    if not isinstance(model, OnnxModel) or model.fixed_shape is None:
        return imgsz, batch_size, True
    batch, size = model.fixed_shape
    if (size, batch) != (imgsz, batch_size):
        print(f"The .onnx was exported for {batch}x3x{size}x{size}: running square {size} images, {batch} a batch "
              f"(export with --dynamic for any size and the checkpoint's rectangular batches)")
    return size, batch, False
