"""Interpreter discovery asks each binary once: what it answered is kept by the binary's
stamp, and a changed binary is asked again."""

from pathlib import Path

import pytest

from workbench.envs import interpreters

FAKE = """#!/bin/sh
echo probed >> {count}
echo {version}
echo "$0"
"""


def test_a_binary_is_probed_again_only_when_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    count = tmp_path / "count"
    fake = tmp_path / "bin" / "python3.99"
    fake.parent.mkdir()
    fake.write_text(FAKE.format(count=count, version="3.99.1"))
    fake.chmod(0o755)

    def found() -> list[str]:
        return [str(i.version) for i in interpreters.discover() if i.path == fake]

    assert found() == ["3.99.1"]
    assert found() == ["3.99.1"]
    assert count.read_text().count("probed") == 1

    fake.write_text(FAKE.format(count=count, version="3.99.22"))  # upgraded in place
    assert found() == ["3.99.22"]
    assert count.read_text().count("probed") == 2
