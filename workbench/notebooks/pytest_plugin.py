"""`pytest --workbench-notebooks notebooks/` collects notebooks: one item per notebook, run as
`workbench test` runs it (smoke preset, own kernel, baselines).

The plugin loads in every pytest run where workbench is installed, so it collects nothing
unless asked, as nbval waits for --nbval, and its options all start with --workbench-.
"""

from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("workbench")
    group.addoption(
        "--workbench-notebooks",
        action="store_true",
        help="collect .ipynb files as workbench notebook tests (smoke preset, own kernel)",
    )
    group.addoption(
        "--workbench-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="seconds per notebook (default 600)",
    )


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    config = parent.config
    if file_path.suffix != ".ipynb" or not config.getoption("workbench_notebooks"):
        return None
    if config.getoption("nbval", default=False) or config.getoption("nbval_lax", default=False):
        return None  # nbval collects notebooks itself
    if ".ipynb_checkpoints" in file_path.parts:
        return None
    return NotebookFile.from_parent(parent, path=file_path)


class NotebookFile(pytest.File):
    def collect(self):
        yield NotebookItem.from_parent(self, name=self.path.name)


class NotebookFailure(Exception):
    pass


class NotebookItem(pytest.Item):
    def runtest(self) -> None:
        from workbench import project as projects
        from workbench.errors import WorkbenchError
        from workbench.notebooks import suite

        try:
            project = projects.load(projects.find_root(self.path.parent))
            timeout = self.config.getoption("workbench_timeout")
            result = suite.run_one(project, self.path, timeout)
        except WorkbenchError as exc:
            raise NotebookFailure(exc.message) from None
        if not result.ok:
            raise NotebookFailure(f"{result.summary}\n{result.details}")

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, NotebookFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, 0, f"notebook {self.path.name}"
