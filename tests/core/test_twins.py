"""The mirror rule (DESIGN.md): YOLOv5Pytorch/ and YOLOv5Jittor/ hold the same .py files, and each pair of twin
files defines the same public top-level names, so a diff of twins shows framework calls only. Read with ast: this
test imports neither framework."""
import ast

import pytest

from yolocore.config import ROOT
from yolocore.training.run import Backend

PYTORCH, JITTOR = ROOT / "YOLOv5Pytorch", ROOT / "YOLOv5Jittor"
# Files with no twin, and why. Everything else in either tree must have one.
JITTOR_ONLY = {
    # Stand-ins for Jittor layers and functions whose behaviour or numerics differ from PyTorch's; the mirrored
    # files use them where the PyTorch tree uses torch.nn's.
    "utils/jittor_nn.py",
    # Each process's own JIT-kernel folder: PyTorch compiles no kernels at run time.
    "utils/kernel_cache.py",
}
# Twins whose public names may differ, {file: (PyTorch-only names, Jittor-only names)}, and why. Kept exact: a name
# added to one side fails the test, and so does one that became mirrored (then it leaves this list).
ONE_SIDED_NAMES = {
    # torch's DataLoader subclassed, with a collate into shared-memory tensors; Jittor's Dataset would make Vars in
    # its workers, so that tree has a loader of its own. Both build it through create_dataloader.
    "utils/dataloader.py": ({"WorkerDataLoader", "collate", "as_tensors"}, {"DataLoader"}),
    # The KD teacher's low precision (bfloat16 or float16): Jittor's CPU kernels have no bfloat16 (docs/speed.md), so
    # that tree's teacher runs float32 like the rest of it.
    "utils/framework.py": ({"teacher_precision"}, set()),
}


def py_files(tree):
    return {path.relative_to(tree).as_posix() for path in tree.rglob("*.py")}


def module_statements(body):
    """The statements that run at module level, those inside top-level if/try/with blocks included."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            inner = [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", [])]
            inner += [stmt for handler in getattr(node, "handlers", []) for stmt in handler.body]
            yield from module_statements(inner)


def assigned_names(target):
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [name for element in target.elts for name in assigned_names(element)]
    return []  # an attribute or item: it defines no module name


def public_names(path):
    """Functions, classes and module-level assignments not starting with '_' (imports are not definitions)."""
    names = set()
    for node in module_statements(ast.parse(path.read_text(), str(path)).body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(name for target in node.targets for name in assigned_names(target))
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            names.update(assigned_names(node.target))
    return {name for name in names if not name.startswith("_")}


def test_both_trees_hold_the_same_files():
    pytorch, jittor = py_files(PYTORCH), py_files(JITTOR)
    assert JITTOR_ONLY <= jittor, f"listed as Jittor-only but missing: {sorted(JITTOR_ONLY - jittor)}"
    assert pytorch - jittor == set(), "PyTorch files without a Jittor twin"
    assert jittor - JITTOR_ONLY - pytorch == set(), "Jittor files without a PyTorch twin (or add them to JITTOR_ONLY)"


@pytest.mark.parametrize("twin", sorted(py_files(PYTORCH) & py_files(JITTOR)))
def test_twin_files_define_the_same_public_names(twin):
    pytorch, jittor = public_names(PYTORCH / twin), public_names(JITTOR / twin)
    expected = ONE_SIDED_NAMES.get(twin, (set(), set()))
    assert (pytorch - jittor, jittor - pytorch) == expected, f"{twin}: (PyTorch-only names, Jittor-only names)"


def test_one_sided_names_are_listed_for_twins_only():
    assert set(ONE_SIDED_NAMES) <= py_files(PYTORCH) & py_files(JITTOR)


@pytest.mark.parametrize("tree", [PYTORCH, JITTOR], ids=["pytorch", "jittor"])
def test_each_train_py_provides_what_the_shared_loop_asks(tree):
    """yolocore.training.loop reads its framework operations from the tree's train.py module (Backend): each must
    be defined or imported there, or the loop fails mid-run."""
    module = ast.parse((tree / "train.py").read_text())
    provided = set()
    for node in module.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            provided.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            provided.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    assert set(Backend.__annotations__) - provided == set()
