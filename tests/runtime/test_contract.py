"""The runtime contract: every WORKBENCH_* variable the package names is declared once, read
through its declaration, and parsed the same way by every reader."""

import re
from pathlib import Path

import pytest

import workbench
from workbench.runtime import contract

PACKAGE = Path(workbench.__file__).parent
NAME = re.compile(r"\bWORKBENCH_[A-Z0-9_]*[A-Z0-9]\b")
# os.environ["WORKBENCH_X"], environ.get("WORKBENCH_X"), env.pop('WORKBENCH_X'), getenv(...)
RAW_READ = re.compile(
    r"""(?:environ|env|getenv)\s*(?:\.\s*(?:get|pop|setdefault)\s*)?[(\[]\s*["']WORKBENCH_"""
)


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_variable_the_package_names_is_declared() -> None:
    undeclared = {
        f"{name} ({path.relative_to(PACKAGE.parent)})"
        for path in _sources()
        for name in NAME.findall(path.read_text(encoding="utf-8"))
        if contract.declared(name) is None
    }
    assert not undeclared, f"declare these in workbench/runtime/contract.py: {sorted(undeclared)}"


def test_no_variable_is_read_around_its_declaration() -> None:
    raw = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in _sources()
        if path.name != "contract.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if RAW_READ.search(line)
    ]
    assert not raw, "read these through workbench.runtime.contract:\n" + "\n".join(raw)


def test_each_declaration_is_complete_and_documented_once() -> None:
    names = [v.name for v in contract.VARIABLES]
    assert len(names) == len(set(names))
    for variable in contract.VARIABLES:
        assert variable.name.startswith(contract.PREFIX) and variable.set_by, variable.name
        assert variable.description.endswith("."), variable.name
        if variable.default is not None:  # a default must parse
            variable.get({})
    rows = contract.reference()
    assert [row["name"] for row in rows] == names
    assert set(rows[0]) == {"name", "default", "set_by", "description", "secret"}


@pytest.mark.parametrize(
    ("variable", "environ", "expected"),
    [
        (contract.LOG_LEVEL, {}, "INFO"),
        (contract.LOG_LEVEL, {"WORKBENCH_LOG_LEVEL": "debug"}, "DEBUG"),
        (contract.ENGINE_WAIT_S, {}, 120.0),
        (contract.ENGINE_WAIT_S, {"WORKBENCH_ENGINE_WAIT_S": ""}, 120.0),  # empty: unset
        (contract.STOP_GRACE_S, {"WORKBENCH_STOP_GRACE_S": "1.5"}, 1.5),
        (contract.GPU_WAIT, {"WORKBENCH_GPU_WAIT": "inf"}, float("inf")),
        (contract.GPU_WAIT, {"WORKBENCH_GPU_WAIT": "0"}, None),
        (contract.GPU_WAIT, {}, None),
        (contract.API_KEYS, {"WORKBENCH_API_KEYS": "sk-a, sk-b sk-c"}, ["sk-a", "sk-b", "sk-c"]),
        (contract.GPUS_ASSIGNED, {"WORKBENCH_GPUS_ASSIGNED": "0,2"}, ["0", "2"]),
        (contract.GPUS_ASSIGNED, {"WORKBENCH_GPUS_ASSIGNED": ""}, []),  # assigned none
        (contract.GPUS_ASSIGNED, {}, None),  # not assigned
        (contract.HOST, {}, "127.0.0.1"),
        (contract.LEASE_DIR, {}, Path("/var/tmp/workbench-gpu-leases")),
        (contract.service_port("my-app"), {"WORKBENCH_MY_APP_PORT": "9000"}, 9000),
    ],
)
def test_values_parse_with_their_declared_parser(variable, environ, expected) -> None:
    assert variable.get(environ) == expected


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (contract.STOP_GRACE_S, "soon", "a number of seconds (0 or more)"),
        (contract.ENGINE_WAIT_S, "-1", "a number of seconds (0 or more)"),
        (contract.GPU_WAIT, "forever", 'a number of seconds, or "inf"'),
        (contract.LOG_LEVEL, "loud", "DEBUG, INFO, WARNING, ERROR or CRITICAL"),
        (contract.service_port("web"), "80a", "a port number from 1 to 65535"),
        (contract.AUTH, "hunter2", "USER:PASSWORD"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(variable, value, expected) -> None:
    with pytest.raises(ValueError) as error:
        variable.get({variable.name: value})
    shown = "" if variable.secret else f"={value!r}"  # a secret is never echoed
    assert str(error.value) == f"{variable.name}{shown}: expected {expected}"


def test_pop_removes_the_variable_once_read() -> None:
    environ = {"WORKBENCH_APP_AUTH": "ann:pw", "OTHER": "x"}
    assert contract.APP_AUTH.pop(environ) == "ann:pw"
    assert environ == {"OTHER": "x"}


def test_a_service_port_variable_is_declared_by_its_template() -> None:
    assert contract.service_port("chat.v2").name == "WORKBENCH_CHAT_V2_PORT"
    assert contract.declared("WORKBENCH_CHAT_V2_PORT").name == "WORKBENCH_<NAME>_PORT"
    assert contract.declared("WORKBENCH_NOPE") is None
