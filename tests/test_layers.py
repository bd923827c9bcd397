"""The package's layers (DESIGN.md, "Layers"): no import runs back up a layer.

Every `import` in every module is read from its syntax tree, the deferred ones inside
functions included, so that a lazy import cannot hide an arrow that runs upwards.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "janssen"

# Bottom to top. A module may import its own layer and any layer below it.
# The top-level modules (`janssen/_data.py`, `_validate.py`, ...) form layer 0.
LAYERS = {"": 0, "optics": 1, "scopes": 2, "io": 3, "invert": 4, "plots": 5, "cli": 6}


def _layer_of_module(parts: tuple[str, ...]) -> str:
    """The layer that `janssen.<parts>` belongs to."""
    if parts and parts[0] in LAYERS:
        return parts[0]
    return ""


def _imported(path: pathlib.Path) -> list[tuple[int, tuple[str, ...]]]:
    """(line, module path under `janssen`) for every janssen import in one file."""
    package = path.relative_to(ROOT.parent).with_suffix("").parts
    if package[-1] == "__init__":
        package = package[:-1]
    else:
        package = package[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "janssen" or alias.name.startswith("janssen."):
                    found.append((node.lineno, tuple(alias.name.split(".")[1:])))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = base + tuple(node.module.split(".") if node.module else ())
            elif node.module and (node.module == "janssen" or node.module.startswith("janssen.")):
                target = tuple(node.module.split("."))
            else:
                continue
            assert target[0] == "janssen", (path, node.lineno)
            if len(target) == 1:
                # `from janssen import io`: the names imported are the layers.
                for alias in node.names:
                    found.append((node.lineno, (alias.name,)))
            else:
                found.append((node.lineno, target[1:]))
    return found


def _violations() -> list[str]:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts in {("__init__",), ("__main__",)}:
            continue  # the package itself assembles every layer
        own = _layer_of_module(parts if len(parts) > 1 else ())
        for line, target in _imported(path):
            other = _layer_of_module(target)
            if LAYERS[other] > LAYERS[own]:
                where = f"{path.relative_to(ROOT.parent)}:{line} ({own or 'root'})"
                bad.append(f"{where} imports janssen.{'.'.join(target)} ({other})")
    return bad


def test_no_import_runs_back_up_a_layer():
    assert _violations() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The checker itself can fail: a planted deferred upward import is reported."""
    fake = tmp_path / "janssen"
    (fake / "scopes").mkdir(parents=True)
    (fake / "io").mkdir()
    (fake / "scopes" / "_x.py").write_text("def f():\n    from ..io._cxi import read\n    return read\n")
    (fake / "io" / "_y.py").write_text("from ..scopes._x import f\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", fake)
    assert _violations() == ["janssen/scopes/_x.py:2 (scopes) imports janssen.io._cxi (io)"]


@pytest.mark.parametrize("name", ["MicroscopeData"])
def test_data_types_live_below_the_microscopes(name):
    import janssen._data
    import janssen.io

    assert getattr(janssen.io, name) is getattr(janssen._data, name)
