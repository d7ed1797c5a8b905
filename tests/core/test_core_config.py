"""Dataset, model and hyperparameter yaml loading: every broken yaml is an error naming the file and what is wrong."""
import threading

import pytest
import yaml

from yolocore.config import (
    FGD_HYP_KEYS,
    HYP_KEYS,
    ROOT,
    ConfigError,
    increment_path,
    load_data_yaml,
    load_hyp,
    load_model_cfg,
    write_text_atomically,
)

SHIPPED_HYPS = [ROOT / tree / "hyp.scratch-low.yaml" for tree in ("YOLOv5Pytorch", "YOLOv5Jittor")]


def write(path, data):
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


@pytest.fixture
def dataset(tmp_path):
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "images" / "val").mkdir(parents=True)
    return tmp_path


def test_relative_paths_resolve_from_the_yaml_folder(dataset):
    sub = dataset / "cfg"
    sub.mkdir()
    f = write(sub / "d.yaml", {"path": "..", "train": "images/train", "val": "images/val", "nc": 2,
                               "names": {0: "a", 1: "b"}})
    data = load_data_yaml(f)
    assert data["train"] == [str(dataset / "images" / "train")]
    assert data["names"] == ["a", "b"] and data["nc"] == 2


def test_nc_may_be_left_to_the_names_as_in_ultralytics_v7_yamls(dataset):
    f = write(dataset / "d.yaml", {"path": ".", "train": "images/train", "val": "images/val",
                                   "names": {1: "b", 0: "a", 2: "c"}})
    data = load_data_yaml(f)
    assert data["names"] == ["a", "b", "c"] and data["nc"] == 3


def test_a_test_split_is_optional_and_resolved_like_the_others(dataset):
    plain = {"path": ".", "train": "images/train", "val": "images/val", "nc": 1, "names": ["a"]}
    assert "test" not in load_data_yaml(write(dataset / "d.yaml", plain))
    assert "test" not in load_data_yaml(write(dataset / "d.yaml", dict(plain, test=None)))
    assert load_data_yaml(write(dataset / "d.yaml", dict(plain, test="images/val")))["test"] == \
        [str(dataset / "images" / "val")]
    with pytest.raises(FileNotFoundError, match="'images/test' resolves to"):
        load_data_yaml(write(dataset / "d.yaml", dict(plain, test="images/test")))


@pytest.mark.parametrize("broken, message", [
    ({"train": "images/train", "val": "images/val", "nc": 1}, "lacks names"),
    ({"train": "images/train", "val": "images/val", "names": {0: "a", 2: "c"}}, "indices 0..1, got [0, 2]"),
    ({"train": "images/train", "val": "images/val", "names": []}, "'names' is empty"),
    ({"val": "images/val", "nc": 1, "names": ["a"]}, "lacks train"),
    ({"train": "images/train", "val": "images/val", "nc": 2, "names": ["a"]}, "nc is 2 but 'names' has 1"),
    ({"train": "images/train", "val": "images/val", "nc": 0, "names": []}, "positive integer"),
    ({"train": "images/train", "val": "images/nope", "nc": 1, "names": ["a"]}, "'images/nope' resolves to"),
    ({"train": "images/train", "val": "images/val", "nc": 1, "names": [3]}, "list of strings"),
])
def test_broken_data_yaml_names_the_file_and_the_problem(dataset, broken, message):
    f = write(dataset / "d.yaml", dict(broken, path="."))
    with pytest.raises((ConfigError, FileNotFoundError)) as e:
        load_data_yaml(f)
    assert str(f) in str(e.value) and message in str(e.value)


def test_not_yaml_and_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not valid yaml"):
        load_data_yaml(write(tmp_path / "a.yaml", "train: [unclosed"))
    with pytest.raises(ConfigError, match="mapping"):
        load_data_yaml(write(tmp_path / "b.yaml", "- just\n- a list\n"))
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_data_yaml(tmp_path / "missing.yaml")


def test_model_cfg_by_name_and_hyp_keys(tmp_path):
    assert load_model_cfg("yolov5s")["width_multiple"] == 0.5
    assert load_model_cfg("yolov5n.yaml")["width_multiple"] == 0.25
    with pytest.raises(ConfigError, match="lacks"):
        load_model_cfg(str(write(tmp_path / "m.yaml", {"nc": 1})))
    with pytest.raises(ConfigError, match="lr0"):
        load_hyp(write(tmp_path / "h.yaml", {"momentum": 0.9}))


def test_the_shipped_hyp_files_are_valid_for_kd_and_equal():
    pytorch, jittor = (load_hyp(path, kd=True) for path in SHIPPED_HYPS)
    assert pytorch == jittor


@pytest.mark.parametrize("key, value, message", [
    ("lr0", "0.01x", "is not a number"),
    ("mosaic", True, "is not a number"),
    ("weight_decay", -0.0005, "finite number >= 0"),
    ("kd_weightf", float("nan"), "finite number >= 0"),
    ("lr0", 0.0, "must be > 0"),
    ("fgd_temp", 0.0, "must be > 0"),
    ("anchor_t", 1.0, "must be > 1"),
    ("fliplr", 1.5, r"must lie in \[0, 1\]"),
    ("nbs", 0, "whole number >= 1"),
    ("nbs", 12.5, "whole number >= 1"),
])
def test_a_bad_hyp_value_names_the_file_and_its_line(tmp_path, key, value, message):
    lines = SHIPPED_HYPS[0].read_text().splitlines()
    line = next(i for i, text in enumerate(lines) if text.startswith(f"{key}:"))
    lines[line] = yaml.safe_dump({key: value}).strip()
    f = write(tmp_path / "hyp.yaml", "\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=f"{f}:{line + 1}: {key}: .*{message}"):
        load_hyp(f)


def test_kd_needs_the_fgd_weights_and_unknown_keys_are_reported(tmp_path, capsys):
    shipped = load_hyp(SHIPPED_HYPS[0])
    ultralytics_like = {**{k: shipped[k] for k in HYP_KEYS}, "copy_paste": 0.0}
    f = write(tmp_path / "h.yaml", ultralytics_like)
    assert load_hyp(f) == ultralytics_like
    line = yaml.safe_dump(ultralytics_like).splitlines().index("copy_paste: 0.0")
    assert f"{f}:{line + 1}: 'copy_paste' is not a hyperparameter" in capsys.readouterr().out
    load_hyp(f, verbose=False)  # the other processes of a distributed run
    assert capsys.readouterr().out == ""
    with pytest.raises(ConfigError, match="--mode KD") as e:
        load_hyp(f, kd=True)
    assert all(k in str(e.value) for k in FGD_HYP_KEYS)


def test_increment_path(tmp_path):
    assert increment_path(tmp_path / "exp") == tmp_path / "exp"
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp2").mkdir()
    assert increment_path(tmp_path / "exp") == tmp_path / "exp3"
    assert increment_path(tmp_path / "exp", exist_ok=True) == tmp_path / "exp"


def test_writers_side_by_side_each_replace_the_whole_file(tmp_path):
    """Two studies in one project write study.json at the same moment (a shared temporary name once stopped one)."""
    path, errors, start = tmp_path / "study.json", [], threading.Barrier(4)

    def writer(i):
        start.wait()
        try:
            for k in range(300):
                write_text_atomically(path, f"writer {i} write {k}\n" * 50)
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    lines = path.read_text().splitlines()
    assert len(lines) == 50 and len(set(lines)) == 1  # one writer's whole text, never a mix
    assert [p.name for p in tmp_path.iterdir()] == ["study.json"]  # no temporary file left behind
