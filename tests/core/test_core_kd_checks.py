"""yolocore's framework-neutral pieces of the KD scripts: the set-up checks of yolocore.training.distillation,
detect.py's label lines and the network input of one image. No framework: models are stand-ins with the attributes the
checks read."""
from types import SimpleNamespace

import numpy as np
import pytest

from yolocore.data.augment import network_input
from yolocore.evaluation.detect_files import write_labels
from yolocore.training.distillation import (
    FGDSettings,
    check_equal_maps,
    check_fgd_inputs,
    check_kd_layers,
    check_teacher_classes,
    fgd_options,
)


def test_teacher_classes_must_be_the_datasets():
    ckpt = {"nc": 2, "names": ["a", "b"]}
    check_teacher_classes("t.pt", ckpt, ["a", "b"])
    with pytest.raises(ValueError, match=r"teacher t.pt was trained on 2 classes \['a', 'b'\], but the dataset has 1"):
        check_teacher_classes("t.pt", ckpt, ["a"])


def test_kd_layers_lie_before_detect():
    model = SimpleNamespace(model=[None] * 25)  # layers 0..23, then Detect
    check_kd_layers([17, 20, 23], [("student", model)])
    with pytest.raises(ValueError, match=r"--kd-layers \[17, 24\]: the teacher has layers 0..23 before Detect"):
        check_kd_layers([17, 24], [("teacher", model)])


def test_maps_of_unequal_size_are_named():
    check_equal_maps([17], [(1, 8, 4, 4)], [(1, 16, 4, 4)], "distil")
    with pytest.raises(ValueError, match=r"layer 20: student map \(2, 2\) and teacher map \(4, 4\) differ in size; "
                                         r"show layers"):
        check_equal_maps([17, 20], [(1, 8, 4, 4), (1, 8, 2, 2)], [(1, 16, 4, 4), (1, 16, 4, 4)], "show")


def test_fgd_settings_from_hyp_and_per_level():
    hyp = {"fgd_temp": 0.5, "fgd_alpha": 2e-3, "fgd_beta": 1e-3, "fgd_gamma": 1e-3, "fgd_lambda": [1e-5, 2e-5]}
    settings = FGDSettings.checked([8, 16], [16, 32], **fgd_options(hyp))
    assert settings.alpha == [2e-3, 2e-3] and settings.lambda_ == [1e-5, 2e-5] and settings.temp == 0.5
    with pytest.raises(ValueError, match="lambda_fgd has 2 entries for 3 levels"):
        FGDSettings.checked([8, 16, 32], [16, 32, 64], **fgd_options(hyp))
    with pytest.raises(ValueError, match="temp must be positive"):
        FGDSettings.checked([8], [16], 0, 1, 1, 1, 1)


def test_fgd_inputs_by_shape():
    check_fgd_inputs([8], [16], [(2, 8, 4, 4)], [(2, 16, 4, 4)], (3, 6))
    with pytest.raises(ValueError, match=r"targets must be \(n, 6\)"):
        check_fgd_inputs([8], [16], [(2, 8, 4, 4)], [(2, 16, 4, 4)], (3, 5))
    with pytest.raises(ValueError, match="expected 8 student and 16 teacher channels"):
        check_fgd_inputs([8], [16], [(2, 9, 4, 4)], [(2, 16, 4, 4)], (3, 6))


def test_network_input_is_one_contiguous_rgb_batch():
    im = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)  # HWC BGR
    batch = network_input(im)
    assert batch.shape == (1, 3, 2, 3) and batch.flags.c_contiguous
    np.testing.assert_array_equal(batch[0, 0], im[..., 2])


def test_label_lines(tmp_path):
    det = np.array([[10, 20, 30, 60, 0.875, 3]], np.float32)
    write_labels(tmp_path / "a.txt", det, (100, 200, 3), save_conf=True)
    assert (tmp_path / "a.txt").read_text() == "3 0.100000 0.400000 0.100000 0.400000 0.87500\n"
    write_labels(tmp_path / "b.txt", det, (100, 200, 3), save_conf=False)
    assert (tmp_path / "b.txt").read_text() == "3 0.100000 0.400000 0.100000 0.400000\n"
