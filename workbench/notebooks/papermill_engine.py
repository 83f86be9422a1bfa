"""The `workbench` papermill engine: papermill's nbclient engine, run inside the run
lifecycle (workbench.notebooks.lifecycle) and never saving a secret parameter value.

`workbench run` uses it, and so can stock papermill: `papermill --engine workbench IN OUT`
records the run under runs/ of the project around the current directory (outside a
project it behaves like papermill's own engine, less the secrets).
"""

import copy
from pathlib import Path

from papermill.engines import NBClientEngine, NotebookExecutionManager

from workbench import project as projects
from workbench.envs import kernels
from workbench.errors import WorkbenchError
from workbench.notebooks import records
from workbench.notebooks.lifecycle import RecordedRun


class RedactingManager(NotebookExecutionManager):
    """Saves the output notebook after each cell, as papermill does, but with secret
    parameter values replaced; the kernel still gets the real ones."""

    def save(self, **kwargs) -> None:
        if not records.secret_parameters(self.nb):
            return super().save(**kwargs)
        if kwargs.get("nb"):
            self.nb = kwargs.pop("nb")
        executing, self.nb = self.nb, copy.deepcopy(self.nb)
        records.redact_notebook(self.nb)
        try:
            super().save(**kwargs)
        finally:
            self.nb = executing


class WorkbenchEngine(NBClientEngine):
    @classmethod
    def execute_notebook(
        cls,
        nb,
        kernel_name,
        output_path=None,
        progress_bar=True,
        log_output=False,
        autosave_cell_every=30,
        recorded_run: RecordedRun | None = None,
        **kwargs,
    ):
        """Execute nb like papermill's engine; recorded_run is the lifecycle `workbench run`
        entered, else one is made for the project around the current directory."""
        if recorded_run is None and (run := _stock_papermill_run(nb, kernel_name, output_path)):
            with run:
                return cls.execute_notebook(
                    nb,
                    kernel_name,
                    output_path,
                    progress_bar,
                    log_output,
                    autosave_cell_every,
                    recorded_run=run,
                    **kwargs,
                )
        manager = RedactingManager(
            nb,
            output_path=output_path,
            progress_bar=progress_bar,
            log_output=log_output,
            autosave_cell_every=autosave_cell_every,
        )
        if recorded_run is not None:
            recorded_run.nb = manager.nb
        manager.notebook_start()
        try:
            extra = [*kernels.QUIET_KERNEL_ARGS, *kwargs.pop("extra_arguments", [])]
            cls.execute_managed_notebook(
                manager, kernel_name, log_output=log_output, extra_arguments=extra, **kwargs
            )
        finally:
            manager.cleanup_pbar()
            manager.notebook_complete()
            records.redact_notebook(manager.nb)  # what papermill writes last, too
        return manager.nb


def _stock_papermill_run(nb, kernel_name: str | None, output_path) -> RecordedRun | None:
    """A lifecycle for a run started by stock papermill in a project; None outside one."""
    try:
        project = projects.load(projects.find_root(Path.cwd()))
    except WorkbenchError:
        return None
    kernel = kernel_name or nb.metadata.get("kernelspec", {}).get("name", "")
    meta = nb.metadata.get("papermill", {})
    notebook = Path(meta.get("input_path") or "notebook.ipynb")
    record = records.start(
        project,
        notebook,
        kernels.env_of(project, kernel) or kernel,
        kernel,
        dict(meta.get("parameters") or {}),
        output=str(output_path) if output_path else "",
    )
    return RecordedRun(project, record, notebook.resolve())
