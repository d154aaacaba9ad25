"""The code's shape, for the architecture notes: the largest modules and functions, and the
functions that read a Config section (`cfg.train`, `ctx.cfg.serving`, ...).

    python benchmarks/shape.py [ROOT]     # ROOT: a checkout (default: this one)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SECTIONS = {"run", "input", "ingest", "session", "bots", "holdout", "validation", "calibrate",
            "graph", "walks", "sequences", "cold", "train", "index", "serving", "evaluate",
            "publish", "spark"}


def _reads_config(node: ast.AST) -> bool:
    """`cfg.<section>` or `<x>.cfg.<section>`."""
    for n in ast.walk(node):
        if isinstance(n, ast.Attribute) and n.attr in SECTIONS:
            v = n.value
            if (isinstance(v, ast.Name) and v.id == "cfg") or (
                    isinstance(v, ast.Attribute) and v.attr == "cfg"):
                return True
    return False


def shape(root: Path) -> dict:
    pkg = root / "recembed"
    modules, functions, readers = [], [], []
    for path in sorted(pkg.rglob("*.py")):
        rel = str(path.relative_to(root))
        text = path.read_text()
        modules.append((len(text.splitlines()), rel))
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                functions.append((size, f"{rel}:{node.name}"))
                inner = [n for n in ast.walk(node) if n is not node and isinstance(
                    n, ast.FunctionDef | ast.AsyncFunctionDef)]
                if _reads_config(node) and not any(_reads_config(i) and i is not node
                                                   for i in inner):
                    readers.append(f"{rel}:{node.name}")
    readers = [r for r in readers if not r.startswith(("recembed/config.py",))]
    return {"modules": sorted(modules, reverse=True), "functions": sorted(functions, reverse=True),
            "readers": readers}


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    s = shape(root)
    print("largest modules (lines):")
    for n, m in s["modules"][:6]:
        print(f"  {n:5d}  {m}")
    print("largest functions (lines):")
    for n, f in s["functions"][:6]:
        print(f"  {n:5d}  {f}")
    files = sorted({r.split(":")[0] for r in s["readers"]})
    print(f"functions reading a Config section (outside config.py): {len(s['readers'])} "
          f"in {len(files)} modules")
    for f in files:
        print(f"  {f}: {sum(r.startswith(f + ':') for r in s['readers'])}")


if __name__ == "__main__":
    main()
