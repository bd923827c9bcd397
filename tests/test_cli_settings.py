"""`janssen reconstruct`'s settings: the config's keys checked once into a frozen `ReconstructSettings`,
and the command's modules: parsing plus public calls (no private module of another package, no h5py)."""

import ast
import dataclasses
import pathlib

import pytest

from janssen.cli import main
from janssen.cli._errors import UsageError
from janssen.cli._main import build_parser
from janssen.cli._settings import ReconstructSettings, read_settings

CLI = pathlib.Path(__file__).parents[1] / "janssen" / "cli"


def _settings(tmp_path: pathlib.Path, toml: str, *flags: str) -> ReconstructSettings:
    (tmp_path / "run.toml").write_text(toml)
    args = build_parser().parse_args(
        ["reconstruct", str(tmp_path / "d.cxi"), "--config", str(tmp_path / "run.toml"), *flags]
    )
    return read_settings(args)


# (TOML line, the message's tail: key, what was expected, what was received)
WRONG_TYPES = [
    ('seed = "abc"', "key 'seed' must be an integer, got 'abc' (str)"),
    ("out = 5", "key 'out' must be a file name (string), got 5 (int)"),
    ("refine = 5", "key 'refine' must be a string or a list of strings, got 5 (int)"),
    ('batched = "no"', "key 'batched' must be true or false, got 'no' (str)"),
    ("batched = 1", "key 'batched' must be true or false, got 1 (int)"),
    ("iterations = 1.5", "key 'iterations' must be an integer, got 1.5 (float)"),
    ("iterations = true", "key 'iterations' must be an integer, got True (bool)"),
    ("learning_rate = true", "key 'learning_rate' must be a number, got True (bool)"),
    ('near_field = "yes"', "key 'near_field' must be true or false, got 'yes' (str)"),
    ('distance = "far"', "key 'distance' must be a number of metres, got 'far' (str)"),
    ("engine = 5", "key 'engine' must be a string, got 5 (int)"),
    ('probe = ""', "key 'probe' must be a file name (string), got ''"),
]


@pytest.mark.parametrize(("line", "message"), WRONG_TYPES)
def test_wrong_type_is_refused_naming_key_expected_and_received(tmp_path, line, message):
    with pytest.raises(UsageError) as raised:
        _settings(tmp_path, line + "\n")
    assert str(raised.value) == f"config {str(tmp_path / 'run.toml')!r}: {message}"


@pytest.mark.parametrize(("line", "message"), WRONG_TYPES[:4])
def test_wrong_type_exits_2_with_one_line(tmp_path, capsys, line, message):
    (tmp_path / "run.toml").write_text(line + "\n")
    code = main(["reconstruct", str(tmp_path / "d.cxi"), "--config", str(tmp_path / "run.toml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("janssen reconstruct: error: config ") and err[0].endswith(message)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run.toml"]  # nothing written


def test_batched_false_string_is_not_batched_mode(tmp_path):
    """`batched = "no"` is refused rather than read as a true (non-empty) value; `false` stays off."""
    with pytest.raises(UsageError, match="'batched' must be true or false, got 'no'"):
        _settings(tmp_path, 'engine = "rpie"\nbatched = "no"\n')
    assert _settings(tmp_path, 'engine = "rpie"\nbatched = false\n').batched is False
    assert _settings(tmp_path, 'engine = "rpie"\nbatched = true\n').batched is True


def test_valid_values_are_accepted_and_converted(tmp_path):
    toml = (
        'learning_rate = 1\nrefine = ["probe", "positions", "object"]\nout = "r.h5"\n'
        'probe = "p.npy"\nseed = 1\n[engine]\nname = "adam"\nbatch_size = 4\n'
    )
    settings = _settings(tmp_path, toml, "--seed", "3")
    assert settings.learning_rate == 1.0 and type(settings.learning_rate) is float
    assert settings.refine == ("object", "probe", "positions")  # the object first, once
    assert settings.out == pathlib.Path("r.h5") and settings.probe == pathlib.Path("p.npy")
    assert settings.seed == 3  # the flag over the config
    assert settings.iterations == 50  # a named engine's default count
    assert dict(settings.engine_parameters) == {"batch_size": 4}
    assert settings.data == tmp_path / "d.cxi" and settings.config == tmp_path / "run.toml"
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.seed = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.engine_parameters["batch_size"] = 8  # type: ignore[index]


def test_defaults_depend_on_the_engine_and_the_field(tmp_path):
    auto = _settings(tmp_path, "")
    assert (auto.engine, auto.iterations, auto.refine, auto.propagator) == ("auto", None, ("object", "probe"), None)
    near = _settings(tmp_path, "near_field = true\ndistance = 2\n")
    assert near.propagator == "fresnel" and near.distance == 2.0 and type(near.distance) is float
    assert _settings(tmp_path, 'refine = "probe, positions"\nengine = "lm"\n').refine == (
        "object",
        "probe",
        "positions",
    )


def _imports(path: pathlib.Path) -> list[tuple[str, list[str], int]]:
    """`(module, imported names, level)` of every import in a file, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", [alias.name for alias in node.names], node.level))
    return found


def _offences(path: pathlib.Path) -> list[str]:
    """Imports of h5py, and of a private module or name of another janssen package."""
    offences = []
    for module, names, level in _imports(path):
        parts = module.split(".")
        if level == 0 and parts[0] == "h5py":
            offences.append(f"{path.name}: import h5py")
        outside = level > 1 or (level == 0 and parts[0] == "janssen" and parts[1:2] != ["cli"])
        private = [part for part in parts[1:] if part.startswith("_")] + [n for n in names if n.startswith("_")]
        if outside and (private or level > 1):
            offences.append(f"{path.name}: from {'.' * level}{module} import {', '.join(names)}")
    return offences


def test_cli_imports_no_private_module_of_another_package_and_no_h5py():
    files = sorted(CLI.glob("*.py"))
    assert len(files) >= 10
    assert [offence for path in files for offence in _offences(path)] == []


def test_import_check_catches_a_private_import(tmp_path):
    """The check above can fail: it finds the imports the CLI had before (the private ones and h5py)."""
    (tmp_path / "old.py").write_text(
        "import h5py\nfrom janssen.invert._reconstruct import DIVERGENCE_FACTOR\nimport janssen.invert as jinv\n"
        "from ..invert import _trainable\nfrom ._settings import read_settings\n"
        "def f():\n    from janssen.invert._checkpoint import result_name\n"
    )
    assert _offences(tmp_path / "old.py") == [
        "old.py: import h5py",
        "old.py: from janssen.invert._reconstruct import DIVERGENCE_FACTOR",
        "old.py: from ..invert import _trainable",
        "old.py: from janssen.invert._checkpoint import result_name",
    ]


def test_reconstruct_module_is_parsing_and_calls():
    assert len((CLI / "_reconstruct.py").read_text().splitlines()) <= 300


def test_the_parsers_engine_choices_are_the_registrys():
    """`--engine`'s choices are written out (the parser loads no JAX): they must be "auto" and
    `janssen.invert.ENGINE_NAMES`, in order, and the PIE engines and optimizers among them."""
    import janssen.invert as jinv
    from janssen.cli._args import AUTO, ENGINE_CHOICES
    from janssen.cli._settings import OPTIMIZERS, PIE_ENGINES

    assert ENGINE_CHOICES == tuple(sorted([AUTO, *jinv.ENGINE_NAMES]))
    pie = tuple(name for name in jinv.ENGINE_NAMES if issubclass(jinv.engine_class(name), jinv.AbstractPIE))
    assert PIE_ENGINES == pie == ("epie", "mpie", "rpie") and OPTIMIZERS == ("adam", "sgd")
    parser_choices = next(
        action.choices
        for action in build_parser()._subparsers._group_actions[0].choices["reconstruct"]._actions
        if action.dest == "engine"
    )
    assert tuple(parser_choices) == ENGINE_CHOICES
