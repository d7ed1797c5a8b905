"""How much the two trees repeat each other: for every twin pair of files (the same path under YOLOv5Pytorch/ and
YOLOv5Jittor/), the non-blank, non-import lines that difflib finds in matching blocks, and the lines each tree
holds. Whatever both twins say line for line is a candidate for yolocore/. Prints figures only:

    python -m benchmarks.twin_lines [--limit 650]

With --limit, exits 1 when the twins share more lines than that.
"""
import argparse
import difflib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREES = ("YOLOv5Pytorch", "YOLOv5Jittor")
IMPORT = re.compile(r"(from\s+\S+\s+)?import\s")


def code_lines(path):
    """Stripped lines that are neither blank nor imports (an import's continuation lines included)."""
    lines, in_import = [], False
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if in_import:
            in_import = not line.endswith(")")
            continue
        if not line:
            continue
        if IMPORT.match(line):
            in_import = line.endswith("(")
            continue
        lines.append(line)
    return lines


def shared_lines(a, b):
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks())


def twin_pairs(root=ROOT):
    first, second = (root / tree for tree in TREES)
    for path in sorted(first.rglob("*.py")):
        twin = second / path.relative_to(first)
        if twin.exists():
            yield path, twin


def measure(root=ROOT):
    """[(relative path, shared lines, lines in the PyTorch twin, lines in the Jittor twin)] over twin pairs."""
    rows = []
    for path, twin in twin_pairs(root):
        a, b = code_lines(path), code_lines(twin)
        rows.append((str(path.relative_to(root / TREES[0])), shared_lines(a, b), len(a), len(b)))
    return rows


def tree_lines(root=ROOT):
    """Non-blank, non-import lines of every .py file in each tree (twins or not)."""
    return {tree: sum(len(code_lines(p)) for p in (root / tree).rglob("*.py")) for tree in TREES}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, help="exit 1 when the twins share more lines than this")
    opt = parser.parse_args(argv)
    rows = measure()
    print(f"{'twin file':32s}{'shared':>8s}{'pytorch':>9s}{'jittor':>8s}")
    for name, shared, a, b in rows:
        print(f"{name:32s}{shared:8d}{a:9d}{b:8d}")
    total = sum(row[1] for row in rows)
    lines = tree_lines()
    print(f"{'total':32s}{total:8d}{lines[TREES[0]]:9d}{lines[TREES[1]]:8d}  (all .py lines of each tree)")
    if opt.limit is not None and total > opt.limit:
        print(f"twins share {total} lines, more than --limit {opt.limit}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
