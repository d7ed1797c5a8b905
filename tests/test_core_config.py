"""Dataset and model yaml loading: every broken yaml is an error naming the file and what is wrong."""
import pytest
import yaml

from yolocore.config import ConfigError, increment_path, load_data_yaml, load_hyp, load_model_cfg


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


@pytest.mark.parametrize("broken, message", [
    ({"train": "images/train", "val": "images/val", "names": ["a"]}, "lacks nc"),
    ({"train": "images/train", "val": "images/val", "nc": 1}, "lacks names"),
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


def test_increment_path(tmp_path):
    assert increment_path(tmp_path / "exp") == tmp_path / "exp"
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp2").mkdir()
    assert increment_path(tmp_path / "exp") == tmp_path / "exp3"
    assert increment_path(tmp_path / "exp", exist_ok=True) == tmp_path / "exp"
