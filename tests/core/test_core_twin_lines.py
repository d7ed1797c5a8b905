"""benchmarks/twin_lines.py, the yardstick of what the two trees repeat: what it counts, and the repository's own
figure, which stays below the limit the trees were brought under when the shared training loop moved to yolocore."""
from benchmarks.twin_lines import code_lines, measure, tree_lines

LIMIT = 650  # shared non-blank, non-import lines of all twin files (1025 before yolocore.training)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_code_lines_skip_blanks_and_imports_with_their_continuations(tmp_path):
    write(tmp_path / "a.py", "import os\nfrom x import (\n    a,\n    b,\n)\n\nX = 1\n  \ndef f():\n    return X\n")
    assert code_lines(tmp_path / "a.py") == ["X = 1", "def f():", "return X"]


def test_shared_lines_are_counted_per_twin_pair(tmp_path):
    write(tmp_path / "YOLOv5Pytorch" / "m.py", "import torch\nA = 1\nB = torch.zeros(2)\nC = 3\n")
    write(tmp_path / "YOLOv5Jittor" / "m.py", "import jittor as jt\nA = 1\nB = jt.zeros(2)\nC = 3\nD = 4\n")
    write(tmp_path / "YOLOv5Jittor" / "only.py", "E = 5\n")
    assert measure(tmp_path) == [("m.py", 2, 3, 4)]
    assert tree_lines(tmp_path) == {"YOLOv5Pytorch": 3, "YOLOv5Jittor": 5}


def test_the_trees_repeat_at_most_the_limit():
    rows = measure()
    shared = sum(row[1] for row in rows)
    assert shared <= LIMIT, f"twin files share {shared} lines: move framework-neutral code into yolocore"
