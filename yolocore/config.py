"""Yaml loading for models, datasets and hyperparameters, and run-folder naming."""
import math
import os
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = Path(__file__).resolve().parent / "models"

HYP_KEYS = (
    "lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum", "warmup_bias_lr",
    "box", "cls", "cls_pw", "obj", "obj_pw", "iou_t", "anchor_t", "fl_gamma",
    "hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective",
    "flipud", "fliplr", "mosaic", "mixup",
)
FGD_HYP_KEYS = ("kd_weight", "fgd_temp", "fgd_alpha", "fgd_beta", "fgd_gamma", "fgd_lambda")
# What the trainer uses where a hyp file lacks one (nbs 64: YOLOv5's nominal batch; kd_weightf 1: a constant weight).
OPTIONAL_HYP_DEFAULTS = {"kd_weightf": 1.0, "label_smoothing": 0.0, "nbs": 64}
OPTIONAL_HYP_KEYS = tuple(OPTIONAL_HYP_DEFAULTS)
# Every hyperparameter is a number >= 0; these have a narrower range: (test, what it says).
_FRACTION = (lambda v: v <= 1, "must lie in [0, 1]")
HYP_BOUNDS = {
    "lr0": (lambda v: v > 0, "must be > 0"),
    "fgd_temp": (lambda v: v > 0, "must be > 0"),
    # a target matches an anchor when their side ratio is below anchor_t: at 1 or less nothing ever matches
    "anchor_t": (lambda v: v > 1, "must be > 1"),
    "nbs": (lambda v: v >= 1 and v == int(v), "must be a whole number >= 1"),
    **dict.fromkeys(("momentum", "warmup_momentum", "hsv_h", "hsv_s", "hsv_v", "translate", "scale", "flipud",
                     "fliplr", "mosaic", "mixup", "label_smoothing"), _FRACTION),
}


class ConfigError(ValueError):
    """A yaml file that cannot be used; the message names the file and what is wrong."""


def load_yaml(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid yaml: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def write_text_atomically(path, text):
    """Write through a temporary file and a rename: a reader (a report, a study beside it) never sees half a file.
    The temporary file is the writer's own: two studies side by side in one project write study.json at the same
    moment, and with one shared name the second rename found its file already moved."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0o600 would make a report readable by its owner only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_yaml(path, data):
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False)


def load_model_cfg(cfg):
    """A model yaml as a dict: a dict passes through; a bare name such as 'yolov5s.yaml' or 'yolov5s'
    is looked up among the shared architectures; anything else is a path."""
    if isinstance(cfg, dict):
        return dict(cfg)
    path = Path(cfg)
    if not path.suffix:
        path = path.with_suffix(".yaml")
    if not path.is_file() and (MODELS_DIR / path.name).is_file():
        path = MODELS_DIR / path.name
    data = load_yaml(path)
    missing = [k for k in ("depth_multiple", "width_multiple", "anchors", "backbone", "head") if k not in data]
    if missing:
        raise ConfigError(f"{path}: model yaml lacks {', '.join(missing)}")
    return data


def normalise_names(names, nc, where):
    """names as a list; nc None takes their count (ultralytics' v7 dataset yamls give names only)."""
    if isinstance(names, dict):
        try:
            indices = sorted(names, key=int)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{where}: 'names' keys must be class indices 0..nc-1") from e
        if [int(k) for k in indices] != list(range(len(names))):
            raise ConfigError(f"{where}: 'names' keys must be the class indices 0..{len(names) - 1}, got {indices}")
        names = [names[k] for k in indices]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{where}: 'names' must be a list of strings or a {{index: name}} mapping")
    if nc is not None and len(names) != nc:
        raise ConfigError(f"{where}: nc is {nc} but 'names' has {len(names)} entries")
    if not names:
        raise ConfigError(f"{where}: 'names' is empty")
    return list(names)


def load_data_yaml(path):
    """A dataset yaml with absolute train/val (and, when it names one, test) paths, int nc and a list of names
    (nc may be left out, as ultralytics' v7 yamls do; names may be a list or an {index: name} mapping).

    Relative 'path' is taken from the yaml's own folder; train/val/test are relative to 'path'. Each of
    them is an image folder, a .txt list of images, or a list of either."""
    path = Path(path)
    data = load_yaml(path)
    missing = [k for k in ("train", "val", "names") if k not in data]
    if missing:
        raise ConfigError(f"{path}: dataset yaml lacks {', '.join(missing)}")
    nc = data.get("nc")
    if nc is not None and (not isinstance(nc, int) or isinstance(nc, bool) or nc < 1):
        raise ConfigError(f"{path}: nc must be a positive integer, got {nc!r}")
    names = normalise_names(data["names"], nc, path)
    base = Path(data.get("path") or ".")
    if not base.is_absolute():
        base = (path.parent / base).resolve()

    def resolve(entry):
        entries = entry if isinstance(entry, (list, tuple)) else [entry]
        out = []
        for e in entries:
            p = Path(e)
            p = p if p.is_absolute() else base / p
            if not p.exists():
                raise FileNotFoundError(f"{path}: '{e}' resolves to {p}, which does not exist")
            out.append(str(p))
        return out

    splits = {split: resolve(data[split]) for split in ("train", "val")}
    if data.get("test"):  # optional, as in ultralytics: a held-out split for val.py --task test
        splits["test"] = resolve(data["test"])
    return {"yaml_file": str(path.resolve()), "path": str(base), **splits, "nc": len(names), "names": names}


def load_hyp(path, kd=False, verbose=True):
    """The hyperparameters of a yaml file; kd: the FGD weights are required too (--mode KD).

    A value that is not a number or lies outside its range is an error naming the file and line. A key that nothing
    reads (a typo, or a YOLOv5 key this trainer has no use for, such as copy_paste) is reported (when verbose), not
    fatal.
    """
    hyp = load_yaml(path)
    required = HYP_KEYS + (FGD_HYP_KEYS if kd else ())
    missing = [k for k in required if k not in hyp]
    if missing:
        where = " (--mode KD needs the FGD weights; the tree's hyp.scratch-low.yaml has them)" if kd else ""
        raise ConfigError(f"{path}: hyperparameters missing{where}: {', '.join(missing)}")
    lines = _key_lines(path)
    for key, value in hyp.items():
        if key not in HYP_KEYS + FGD_HYP_KEYS + OPTIONAL_HYP_KEYS:
            if verbose:
                print(f"{path}:{lines.get(key, '?')}: '{key}' is not a hyperparameter of this trainer and is ignored")
            continue
        problem = _out_of_range(key, value)
        if problem:
            raise ConfigError(f"{path}:{lines.get(key, '?')}: {key}: {value!r} {problem}")
    return hyp


def trained_hyp(hyp, kd):
    """The hyperparameters a run trains by: those the trainer reads in its mode, the optional ones at their defaults
    where hyp lacks them. Two hyp files that give the same are the same recipe, whatever else they hold."""
    keys = HYP_KEYS + (FGD_HYP_KEYS if kd else ())
    defaults = {k: v for k, v in OPTIONAL_HYP_DEFAULTS.items() if kd or k != "kd_weightf"}
    return {**defaults, **{k: hyp[k] for k in keys + tuple(defaults) if k in hyp}}


def _key_lines(path):
    """Top-level key -> its 1-based line in the yaml file."""
    with open(path, encoding="utf-8") as f:
        node = yaml.compose(f)
    return {k.value: k.start_mark.line + 1 for k, _ in node.value}


def _out_of_range(key, value):
    """Why value cannot be the hyperparameter key, or None when it can."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "is not a number"
    if not math.isfinite(value) or value < 0:
        return "must be a finite number >= 0"
    test, rule = HYP_BOUNDS.get(key, (lambda v: True, ""))
    return None if test(value) else rule


def increment_path(path, exist_ok=False):
    """runs/train/exp -> runs/train/exp2, exp3, ... unless exist_ok or the path is free."""
    path = Path(path)
    if exist_ok or not path.exists():
        return path
    n = 2
    while (candidate := path.with_name(f"{path.name}{n}")).exists():
        n += 1
    return candidate
