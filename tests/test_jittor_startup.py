"""What the Jittor tree's package does before jittor loads: Jittor's errors are shown despite log_silent."""
import jittor_utils
import pytest

import YOLOv5Jittor  # noqa: F401  (installs the error hook)


def test_jittors_rerun_request_ends_the_script_with_an_error_not_silently():
    # What jittor/compiler.py logs, then exits with status 0, after rebuilding its core for new compile flags.
    with pytest.raises(SystemExit) as ended:
        jittor_utils.LOG.e("jit_utils updated, please rerun your command.")
    assert ended.value.code == ("Jittor rebuilt its core library (its compiler or compile flags changed): "
                                "jit_utils updated, please rerun your command.")


def test_other_jittor_errors_are_printed(capsys):
    jittor_utils.LOG.e("load parameter ", lambda: "model.0.conv.weight", " failed")
    assert capsys.readouterr().err == "Jittor error: load parameter model.0.conv.weight failed\n"
