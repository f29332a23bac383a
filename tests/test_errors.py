"""One error hierarchy: every error the package raises on purpose is an AmiEngineError, and
the command line turns each into its label and exit code in one place."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import ami_engine
from ami_engine.errors import AmiEngineError, GateRejected, InputError, UsageError

# error class -> (exit code, label) as a person at the command line sees them
EXIT_CODES = {
    "ami_engine.errors.AmiEngineError": (2, "error:"),
    "ami_engine.errors.InputError": (2, "error:"),
    "ami_engine.errors.UsageError": (2, "error:"),
    "ami_engine.errors.GateRejected": (1, "refused:"),
    "ami_engine.config.params.ConfigError": (2, "error:"),
    "ami_engine.suggestion.SuggestionError": (2, "error:"),
    "ami_engine.gate.yardstick.BaselineRefused": (2, "error:"),
    "ami_engine.gate.audit.AuditLogError": (2, "error:"),
    "ami_engine.gate.approval.ApplyRefused": (1, "refused:"),
    "ami_engine.gate.approval.ApplyUsageError": (2, "error:"),
    "ami_engine.learning.settings.LearnError": (2, "error:"),
    "ami_engine.learning.study.StudyError": (2, "error:"),
    "ami_engine.cluster._spec.ClusterError": (2, "error:"),
    "ami_engine.learning.study.StudyMismatchError": (2, "error:"),
    "ami_engine.learning.study.StudyExistsError": (2, "error:"),
    "ami_engine.learning.study.StudyBusyError": (2, "error:"),
}


def _public_errors() -> dict[str, type[BaseException]]:
    found = {}
    for info in pkgutil.walk_packages(ami_engine.__path__, "ami_engine."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name
                    and not name.startswith("_")):
                found[f"{info.name}.{name}"] = obj
    return found


def test_every_public_error_of_the_package_is_an_ami_engine_error():
    errors = _public_errors()
    assert set(errors) == set(EXIT_CODES)
    for name, cls in errors.items():
        assert issubclass(cls, AmiEngineError), name


@pytest.mark.parametrize("name", sorted(EXIT_CODES))
def test_each_error_has_its_exit_code_and_label(name):
    module, cls_name = name.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), cls_name)
    assert (cls.exit_code, cls.label) == EXIT_CODES[name]


def test_input_and_usage_errors_are_still_value_errors():
    assert issubclass(InputError, ValueError) and issubclass(UsageError, ValueError)
    assert not issubclass(GateRejected, ValueError)


def test_the_io_layer_and_the_root_share_one_input_error():
    from ami_engine.io import InputError as io_input_error
    from ami_engine.io import files

    assert files.InputError is InputError is io_input_error is ami_engine.InputError


def test_an_input_error_subclass_survives_pickling_as_itself():
    import pickle

    from ami_engine.config import ConfigError

    err = pickle.loads(pickle.dumps(ConfigError("J_MIN: 7 is outside its domain [0, 1]")))
    assert type(err) is ConfigError and str(err) == "J_MIN: 7 is outside its domain [0, 1]"
    located = pickle.loads(pickle.dumps(InputError("f.jsonl", 3, "cus", "not a finite number", float("nan"))))
    assert str(located) == "f.jsonl:3: cus: not a finite number (NaN)"
    assert str(located.with_line_offset(10)) == "f.jsonl:13: cus: not a finite number (NaN)"


@pytest.mark.parametrize(("error", "code", "line"), [
    (InputError("states.jsonl", 4, "risk", "missing"), 2, "error: states.jsonl:4: risk: missing"),
    (UsageError("--seed: must be an integer"), 2, "error: --seed: must be an integer"),
    (GateRejected("the gate REJECTs it"), 1, "refused: the gate REJECTs it"),
    (FileNotFoundError(2, "No such file or directory", "x.toml"), 2, "error: x.toml: no such file or directory"),
])
def test_the_command_line_maps_errors_to_exit_codes_in_one_place(capsys, error, code, line):
    from ami_engine.cli import report_error

    assert report_error(error) == code
    assert capsys.readouterr().err.strip() == line


def test_a_study_error_from_the_api_is_a_usage_error():
    from ami_engine.learning.study import study_location

    with pytest.raises(UsageError, match="unknown storage scheme 'ftp'"):
        study_location("ftp://host/study")
