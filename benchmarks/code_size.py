"""Code size: the largest modules and the longest functions of the project's packages.

    python benchmarks/code_size.py [--top N] [--over LINES] [--root TREE] [DIR_OR_FILE ...]

Prints two tables: the N largest ``.py`` files (``wc -l`` lines) and the N longest functions
(lines from the ``def`` line, decorators included, to the function's last line), then how
many functions are longer than ``--over`` lines. Reads source text only; imports nothing of
the project. The default folders are ``synehrgy_assets`` and ``orchestration``.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIRS = ("synehrgy_assets", "orchestration")


def python_files(dirs: list[Path]) -> list[Path]:
    found = [p for d in dirs for p in ([d] if d.is_file() else d.rglob("*.py")) if "__pycache__" not in p.parts]
    return sorted(found)


def line_count(path: Path) -> int:
    # The same figure as ``wc -l``: the number of newline characters.
    return path.read_bytes().count(b"\n")


def functions(path: Path) -> list[tuple[int, str, int]]:
    """(length, qualified name, first line) for every function and method in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([child.lineno] + [d.lineno for d in child.decorator_list])
                length = child.end_lineno - start + 1
                found.append((length, f"{prefix}{child.name}", start))
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="*", default=list(DEFAULT_DIRS))
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--over", type=int, default=80, help="count functions longer than this")
    parser.add_argument("--root", type=Path, default=REPO, help="the tree the folders are in (default: this repo)")
    args = parser.parse_args()

    root = args.root.resolve()
    files = python_files([root / d for d in args.dirs])
    sizes = sorted(((line_count(p), p.relative_to(root)) for p in files), reverse=True)
    funcs = sorted(
        ((n, f"{p.relative_to(root)}:{line}", name) for p in files for n, name, line in functions(p)),
        reverse=True,
    )

    print(f"{len(files)} modules, {sum(n for n, _ in sizes)} lines in {', '.join(args.dirs)}")
    print(f"\nlargest {args.top} modules (wc -l):")
    for n, rel in sizes[: args.top]:
        print(f"  {n:6d}  {rel}")
    print(f"\nlongest {args.top} functions (lines, decorators included):")
    for n, where, name in funcs[: args.top]:
        print(f"  {n:6d}  {name}  ({where})")
    over_modules = sum(1 for n, _ in sizes if n > 600)
    over_funcs = sum(1 for n, _, _ in funcs if n > args.over)
    print(f"\nmodules over 600 lines: {over_modules}; functions over {args.over} lines: {over_funcs}")


if __name__ == "__main__":
    main()
