"""The identity of code: a digest of the temposplit modules that some entry points import.

Caches and evaluation rows are named by the code that made them (the int8 network's cache,
:mod:`temposplit.model.qcache`; an evaluation's rows, docs/evaluation.md "Resuming"). A
digest of a whole package is too broad (an edit of a benchmark would recalibrate the
network and rerun an evaluation) and a hand-kept list of modules goes stale, so the modules
are found by reading the code: every ``import`` and ``from ... import`` statement of a
module, those inside functions included, that names a temposplit module adds it, and so on
transitively from the entry points. Modules outside temposplit (PyTorch, NumPy, PyAV) are
identified by their versions where it matters, by the callers. A module imported by a
string (``importlib.import_module``) is not seen: none of the code these digests cover
does that (the CLI's command table does, and no digest starts from it).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PACKAGE = "temposplit"


def _spec_file(name: str) -> tuple[Path, bool] | None:
    """The source file of module ``name`` and whether it is a package; None if ``name`` is not
    a module (an attribute of one: ``from temposplit.model import load_detector``)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin), spec.submodule_search_locations is not None


def _named(tree: ast.AST, name: str, is_package: bool) -> set[str]:
    """Every module name an import statement of the module could bring in (a ``from X import
    y`` names ``X`` and, in case ``y`` is a submodule, ``X.y``)."""
    here = name if is_package else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{a.name}" for a in node.names if a.name != "*")
    return {m for m in out if m == PACKAGE or m.startswith(PACKAGE + ".")}


def _parents(name: str) -> list[str]:
    """The packages that importing ``name`` runs first: ``a.b.c`` -> ``a``, ``a.b``."""
    parts = name.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


@cache
def module_closure(roots: tuple[str, ...]) -> dict[str, Path]:
    """The temposplit modules that ``roots`` import, transitively, with the roots and every
    package on the way (their ``__init__`` runs too): module name -> source file."""
    found: dict[str, Path] = {}
    todo = [m for r in roots for m in (*_parents(r), r)]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        spec = _spec_file(name)
        if spec is None:
            if name in roots:
                raise ValueError(f"{name} is not a module")
            continue
        path, is_package = spec
        found[name] = path
        for m in _named(ast.parse(path.read_bytes(), str(path)), name, is_package):
            todo += [p for p in (*_parents(m), m) if p not in found]
    return found


def source_digest(roots: Iterable[str], exclude: Iterable[str] = ()) -> bytes:
    """SHA-256 over the name and source of every module of :func:`module_closure` (in name
    order), less ``exclude`` (modules still followed for their imports, their own text not
    counted: the caller identifies what in them matters another way)."""
    skip = set(exclude)
    h = hashlib.sha256()
    for name, path in sorted(module_closure(tuple(roots)).items()):
        if name not in skip:
            h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.digest()
