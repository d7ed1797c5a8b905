"""Checkpoint files without a framework: read PyTorch's .pt and read/write Jittor's .pkl as plain numpy.

A checkpoint is a dict of numbers, strings, lists, dicts and arrays. The PyTorch tree writes it with torch.save
(.pt, a zip), the Jittor tree as a pickle of numpy arrays (.pkl). Both trees read both: the readers here only
rebuild arrays and plain containers, never arbitrary objects, so a checkpoint from elsewhere cannot run code.
ultralytics YOLOv5 pickles whole modules into its .pt files; those are read too, into this project's form, with
each module class replaced by an inert stand-in that only keeps the pickled attributes.
"""
import codecs
import collections
import os
import pickle
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from yolocore.architecture.layers import MODULE_NAMES

_TORCH_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


SUFFIXES = {"pytorch": ".pt", "jittor": ".pkl"}  # each tree's checkpoint file suffix
REQUIRED_KEYS = ("model", "yaml", "nc", "names")


class CheckpointFormatError(ValueError):
    pass


# Where ultralytics' pickled modules live: its own (models.common, models.yolo) and torch.nn's.
_MODULE_PACKAGES = ("models.", "torch.nn.modules.")
_PICKLED_HELPERS = {
    ("torch._utils", "_rebuild_parameter"): lambda data, *_: data,
    ("builtins", "set"): set, ("__builtin__", "set"): set,
    ("_codecs", "encode"): codecs.encode,  # how pickle protocol 2 writes bytes, e.g. a numpy array's data
    ("pathlib", "PosixPath"): lambda *parts: str(PurePosixPath(*parts)),
    ("pathlib", "WindowsPath"): lambda *parts: str(PureWindowsPath(*parts)),
}


def _rebuild_tensor(storage, offset, size, stride, *_):
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * itemsize for s in stride))
    return np.array(view)


class PickledModule:
    """Stands in for a pickled torch module's class: keeps the attributes (parameters, buffers, submodules,
    ultralytics' yaml and names) and has no code of the original class to run."""

    def __setstate__(self, state):
        self.attributes = state[0] if isinstance(state, tuple) else state


def _stand_in(module, name):
    return type(name, (PickledModule,), {"__module__": f"pickled:{module}"})


def module_state_dict(module, prefix=""):
    """state_dict() of a pickled module: parameters, buffers, then each submodule, in torch's order. (YOLOv5 has
    no non-persistent buffers, which state_dict() would leave out.)"""
    attributes, out = module.attributes, {}
    for kind in ("_parameters", "_buffers"):
        out.update((prefix + k, v) for k, v in attributes.get(kind, {}).items() if v is not None)
    for k, sub in attributes.get("_modules", {}).items():
        if sub is not None:
            out.update(module_state_dict(sub, f"{prefix}{k}."))
    return out


def from_ultralytics(raw, path):
    """An ultralytics YOLOv5 checkpoint ({'model': pickled DetectionModel, 'ema': ...}) in this project's form,
    with float32 weights (ultralytics saves float16). Its EMA weights when it has them, as ultralytics uses."""
    net = raw["ema"] if isinstance(raw.get("ema"), PickledModule) else raw["model"]
    yaml, names = net.attributes.get("yaml"), net.attributes.get("names")
    if not isinstance(yaml, dict) or names is None:
        raise CheckpointFormatError("its pickled model has no yaml or names: not an ultralytics YOLOv5 v6+ model")
    if "activation" in yaml:
        raise CheckpointFormatError(f"its yaml sets activation {yaml['activation']}; this project builds SiLU only")
    unknown = sorted({layer[2] for layer in yaml.get("backbone", []) + yaml.get("head", [])} - set(MODULE_NAMES))
    if unknown:
        raise CheckpointFormatError(f"its model uses {', '.join(unknown)}, which this project does not build "
                                    "(ultralytics YOLOv5 v6+ only)")
    names = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
    weights = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in module_state_dict(net).items()}
    print(f"{path}: read an ultralytics YOLOv5 checkpoint ({len(weights)} tensors, {len(names)} classes)")
    return {"model": weights, "ema": None, "yaml": yaml, "nc": yaml["nc"], "names": names,
            "epoch": raw.get("epoch", -1), "framework": "ultralytics"}


class _TorchUnpickler(pickle.Unpickler):
    """Unpickles torch.save's data.pkl into numpy: tensors become arrays, torch and ultralytics modules inert
    stand-ins, nothing else is allowed."""

    def __init__(self, file, archive, prefix):
        super().__init__(file)
        self.archive, self.prefix, self.storages, self.stand_ins = archive, prefix, {}, {}

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _TORCH_STORAGE_DTYPES:
            return _TORCH_STORAGE_DTYPES[name]
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) in _PICKLED_HELPERS:
            return _PICKLED_HELPERS[module, name]
        if (module, name) in _NUMPY_GLOBALS:  # an unfinished ultralytics run's best_fitness
            return super().find_class(module, name)
        if module.startswith(_MODULE_PACKAGES):
            return self.stand_ins.setdefault((module, name), _stand_in(module, name))
        raise CheckpointFormatError(f"unsupported object {module}.{name} in a PyTorch checkpoint")

    def persistent_load(self, pid):
        _, dtype, key, _, numel = pid
        if key not in self.storages:
            raw = self.archive.read(f"{self.prefix}/data/{key}")
            self.storages[key] = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"), count=numel)
        return self.storages[key]


class _NumpyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _NUMPY_GLOBALS or (module, name) == ("collections", "OrderedDict"):
            return super().find_class(module, name)
        raise CheckpointFormatError(f"unsupported object {module}.{name} in a checkpoint pickle")


def read_torch_checkpoint(path):
    """A torch.save zip of tensors and plain containers, as numpy arrays and plain containers."""
    with zipfile.ZipFile(path) as archive:
        pkl = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
        if pkl is None:
            raise CheckpointFormatError(f"{path}: a zip without data.pkl is not a PyTorch checkpoint")
        order = next((n for n in archive.namelist() if n.endswith("/byteorder")), None)
        if order is not None and archive.read(order).strip() != b"little":
            raise CheckpointFormatError(f"{path}: big-endian PyTorch checkpoints are not supported")
        with archive.open(pkl) as f:
            unpickler = _TorchUnpickler(f, archive, pkl.rsplit("/", 1)[0])
            ckpt = unpickler.load()
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), PickledModule):
        return from_ultralytics(ckpt, path)
    if unpickler.stand_ins:
        raise CheckpointFormatError(f"pickled modules ({', '.join(sorted(map('.'.join, unpickler.stand_ins)))}) "
                                    "outside an ultralytics YOLOv5 checkpoint")
    return ckpt


def read_pickle_checkpoint(path):
    with open(path, "rb") as f:
        return _NumpyUnpickler(f).load()


def checkpoint_file(path):
    """path as a Path, if it is a file; else FileNotFoundError, naming the other tree's checkpoint of that name where
    there is one (best.pt asked of a Jittor run, which wrote best.pkl)."""
    path = Path(path)
    if path.is_file():
        return path
    others = [(framework, path.with_suffix(suffix)) for framework, suffix in SUFFIXES.items()
              if path.name and path.suffix != suffix and path.with_suffix(suffix).is_file()]
    hint = "".join(f" ({other} exists: the {framework} tree writes {other.suffix})" for framework, other in others)
    raise FileNotFoundError(f"{path}: checkpoint not found{hint}")


def read_checkpoint(path):
    """Either format, recognised by content (a .pt is a zip), as numpy arrays and plain containers."""
    path = checkpoint_file(path)
    with open(path, "rb") as f:
        zip_start, is_zip = f.read(4) == b"PK\x03\x04", zipfile.is_zipfile(f)
    if zip_start and not is_zip:  # a zip's directory is at its end: what an interrupted copy loses first
        raise ValueError(f"{path}: truncated or damaged (a .pt zip file without its end); copy it again")
    try:
        return read_torch_checkpoint(path) if is_zip else read_pickle_checkpoint(path)
    except CheckpointFormatError as e:
        raise ValueError(f"{path}: not a checkpoint of this project ({e})") from e
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, KeyError, TypeError, ValueError) as e:
        if isinstance(e, EOFError) or "truncated" in str(e):
            raise ValueError(f"{path}: truncated (the file ends before its data does); copy it again") from e
        raise ValueError(f"{path}: not a checkpoint of this project ({type(e).__name__}: {e})") from e


def find_last_checkpoint(project, suffix):
    """The newest run's last checkpoint under project: what --resume alone continues."""
    runs = sorted(Path(project).glob(f"**/weights/last{suffix}"), key=lambda f: f.stat().st_mtime)
    if not runs:
        raise FileNotFoundError(f"--resume: no last{suffix} found under {project}; pass the checkpoint path")
    return runs[-1]


def temporary_path(path):
    """Where a checkpoint for path is written before its rename: a name of this process's own, so that two
    processes writing the same checkpoint (convert.py twice, say) never rename each other's file."""
    path = Path(path)
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def write_pickle_checkpoint(ckpt, path):
    """Write to a temporary file and rename, so a crash mid-write never leaves a broken last/best checkpoint."""
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as f:
            pickle.dump(ckpt, f, protocol=4)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def checked_checkpoint(ckpt, path):
    """A checkpoint read from path, once it has the keys every tree needs, labelled with its path and (older
    checkpoints of the PyTorch tree did not say) the framework that wrote it."""
    missing = [k for k in REQUIRED_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {', '.join(missing)}")
    ckpt.setdefault("framework", "pytorch")
    ckpt["path"] = str(path)
    return ckpt


def network_weights(ckpt, use_ema=True):
    """The state dict a network is built from: the EMA weights when asked for and present, else the model's."""
    return ckpt.get("ema") if use_ema and ckpt.get("ema") is not None else ckpt["model"]


def convert_checkpoint(weights, out, load_checkpoint, save_checkpoint, framework, suffix):
    """convert.py (both trees): weights, read by the tree's load_checkpoint, written by its save_checkpoint to out
    (default: weights with the tree's suffix) without the optimizer state, whose layout is framework-specific."""
    ckpt = load_checkpoint(weights)
    out = Path(out) if out else Path(weights).with_suffix(suffix)
    if out.resolve() == Path(weights).resolve():
        raise ValueError(f"{weights}: already a {suffix} checkpoint; pass --out to write a copy")
    ckpt.update(framework=framework, optimizer=None, converted_from=str(weights))
    ckpt.pop("path")
    save_checkpoint(ckpt, out)
    print(f"{weights} -> {out}")
    return out


def map_arrays(obj, fn):
    """obj with fn applied to every array inside its dicts, lists and tuples."""
    if isinstance(obj, dict):
        return type(obj)((k, map_arrays(v, fn)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_arrays(v, fn) for v in obj)
    return fn(obj) if isinstance(obj, np.ndarray) else obj


def state_dict_mismatch(expected, given, optional=("num_batches_tracked",)):
    """Why weights `given` ({name: shape}) do not fit a model expecting `expected` ({name: shape}); '' if they do.
    Keys ending in one of `optional` may be missing (PyTorch's BatchNorm counter, which Jittor does not keep)."""
    missing = [k for k in expected if k not in given and not k.endswith(optional)]
    unexpected = [k for k in given if k not in expected and not k.endswith(optional)]
    shapes = [f"{k} {tuple(given[k])} != {tuple(v)}" for k, v in expected.items()
              if k in given and tuple(given[k]) != tuple(v)]
    parts = [f"{what} {', '.join(keys[:5])}" + (" ..." if len(keys) > 5 else "")
             for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)) if keys]
    return "; ".join(parts)
