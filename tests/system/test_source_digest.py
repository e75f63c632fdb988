"""The code identity of caches and evaluation rows (temposplit/source.py): the modules found
from entry points by their import statements, and a digest that follows their text."""

from __future__ import annotations

import sys

import pytest

from temposplit import source


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A throwaway package ``tsdemo`` on the path, read as if it were temposplit."""
    root = tmp_path / "tsdemo"
    (root / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "entry.py": "from . import helper\n\ndef later():\n    from tsdemo.sub.deep import value\n    return value\n",
        "helper.py": "import os\nfrom tsdemo.sub import CONSTANT  # an attribute of the package, not a module\n",
        "sub/__init__.py": "CONSTANT = 1\n",
        "sub/deep.py": "from ..helper import os\nvalue = 2\n",
        "unrelated.py": "x = 3\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(source, "PACKAGE", "tsdemo")
    source.module_closure.cache_clear()
    yield root
    source.module_closure.cache_clear()
    for name in [m for m in sys.modules if m == "tsdemo" or m.startswith("tsdemo.")]:
        del sys.modules[name]


def test_the_closure_follows_relative_lazy_and_package_imports(package):
    found = source.module_closure(("tsdemo.entry",))
    assert set(found) == {"tsdemo", "tsdemo.entry", "tsdemo.helper", "tsdemo.sub", "tsdemo.sub.deep"}
    assert found["tsdemo.sub"] == package / "sub" / "__init__.py"


def test_the_digest_follows_the_closure_and_nothing_else(package):
    before = source.source_digest(["tsdemo.entry"])
    (package / "unrelated.py").write_text("x = 4\n")
    assert source.source_digest(["tsdemo.entry"]) == before
    (package / "sub" / "deep.py").write_text("from ..helper import os\nvalue = 5\n")
    changed = source.source_digest(["tsdemo.entry"])
    assert changed != before
    # An excluded module's text does not count; its imports are still followed.
    without = source.source_digest(["tsdemo.entry"], exclude=["tsdemo.helper"])
    (package / "helper.py").write_text("import os\nfrom tsdemo.sub import CONSTANT\nY = 1\n")
    assert source.source_digest(["tsdemo.entry"], exclude=["tsdemo.helper"]) == without
    assert source.source_digest(["tsdemo.entry"]) != changed


def test_a_root_that_is_no_module_is_an_error(package):
    with pytest.raises(ValueError, match="not a module"):
        source.module_closure(("tsdemo.missing",))
