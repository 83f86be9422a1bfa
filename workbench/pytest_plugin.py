"""Plain `pytest notebooks/` collects notebooks: one item per notebook, run as
`workbench test` runs it (smoke preset, own kernel, baselines). Steps aside for --nbval."""

from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("workbench")
    group.addoption(
        "--no-notebooks",
        action="store_true",
        help="do not collect .ipynb files as workbench notebook tests",
    )
    group.addoption(
        "--notebook-timeout", type=float, default=600.0, help="seconds per notebook (default 600)"
    )


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    config = parent.config
    if file_path.suffix != ".ipynb" or config.getoption("no_notebooks"):
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
        from workbench import testing
        from workbench.errors import WorkbenchError

        try:
            project = projects.load(projects.find_root(self.path.parent))
            result = testing.run_one(project, self.path, self.config.getoption("notebook_timeout"))
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
