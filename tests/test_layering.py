"""The packages' layering: every import of every module (function-level ones included) runs with the
data flow, never against it.

`inference` is the ground floor (protocol, prompts, records, file I/O, backends, agents, editors,
pipeline) and imports no other package of this repo. `data_prep` and `reward_fns` stand on it,
`eval` on `inference` and `reward_fns`, the editing `app` on all three (it scores edits with eval's
judge), and `recipes` at the top may import anything. `python tests/test_layering.py` prints the
package import graph.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: The one definition of the allowed arrows: package -> the packages it may import.
ALLOWED: dict[str, frozenset[str]] = {
    "inference": frozenset(),
    "data_prep": frozenset({"inference"}),
    "reward_fns": frozenset({"inference"}),
    "eval": frozenset({"inference", "reward_fns"}),
    "app": frozenset({"inference", "reward_fns", "eval"}),
    "recipes": frozenset({"inference", "data_prep", "reward_fns", "eval", "app"}),
}
PACKAGES = tuple(ALLOWED)


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in `tree`, at any depth, and of every
    `importlib.import_module("literal")`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def package_imports() -> list[tuple[str, str, Path, int]]:
    """(importing package, imported package, file, line) for every import between two packages."""
    arrows = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for line, module in imported_modules(tree):
                top = module.split(".")[0]
                if top in ALLOWED and top != package:
                    arrows.append((package, top, path, line))
    return arrows


def graph() -> dict[str, dict[str, int]]:
    """{package: {imported package: number of import statements}}."""
    edges: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for src, dst, _, _ in package_imports():
        edges[src][dst] += 1
    return {src: dict(sorted(dst.items())) for src, dst in sorted(edges.items())}


def test_every_import_runs_with_the_data_flow():
    wrong = [
        f"{path.relative_to(REPO)}:{line}: {src} imports {dst} (allowed: {', '.join(sorted(ALLOWED[src])) or 'none'})"
        for src, dst, path, line in package_imports()
        if dst not in ALLOWED[src]
    ]
    assert not wrong, "imports against the data flow:\n" + "\n".join(wrong)


def test_the_allowed_arrows_have_no_cycle():
    seen: set[str] = set()
    for package in PACKAGES:  # listed bottom-up: each may import only packages listed before it
        assert ALLOWED[package] <= seen, package
        seen.add(package)


def test_the_walker_sees_function_level_imports(tmp_path):
    code = "def f():\n    from data_prep.records import x\n    import importlib\n    importlib.import_module('eval.cli')\n"
    assert imported_modules(ast.parse(code)) == [(2, "data_prep.records"), (3, "importlib"), (4, "eval.cli")]


if __name__ == "__main__":
    for src, dsts in graph().items():
        print(f"{src} -> " + ", ".join(f"{d} ({n})" for d, n in dsts.items()), file=sys.stdout)
