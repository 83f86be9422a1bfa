"""`papermill --engine workbench IN OUT …`: papermill's own engine, plus a run record.

The record (runs/<id>/record.json of the project around the current directory) names
the output notebook papermill wrote, and is written whether the run succeeds or not.
"""

from pathlib import Path

from papermill.engines import NBClientEngine

from workbench import project as projects
from workbench import runs
from workbench.errors import WorkbenchError
from workbench.kernels import PREFIX


class WorkbenchEngine(NBClientEngine):
    @classmethod
    def execute_notebook(cls, nb, kernel_name, output_path=None, **kwargs):
        try:
            project = projects.load(projects.find_root(Path.cwd()))
        except WorkbenchError:
            project = None  # not in a project: behave exactly like papermill's engine
        if project is None:
            return super().execute_notebook(nb, kernel_name, output_path=output_path, **kwargs)
        kernel = kernel_name or nb.metadata.get("kernelspec", {}).get("name", "")
        record = _start(project, nb, kernel, output_path)
        record.save(project)
        try:
            result = super().execute_notebook(nb, kernel_name, output_path=output_path, **kwargs)
            record.status = "ok"
            return result
        except KeyboardInterrupt:
            record.status = "interrupted"
            raise
        except BaseException as exc:
            record.status = "failed"
            record.error = {
                "ename": type(exc).__name__,
                "evalue": str(exc).splitlines()[0] if str(exc).strip() else "",
            }
            raise
        finally:
            runs.finish(record, nb)
            record.save(project)


def _start(project: projects.Project, nb, kernel: str, output_path) -> runs.RunRecord:
    meta = nb.metadata.get("papermill", {})
    env = kernel[len(PREFIX) :] if kernel.startswith(PREFIX) else kernel
    return runs.start(
        project,
        Path(meta.get("input_path") or "notebook.ipynb"),
        env,
        kernel,
        dict(meta.get("parameters") or {}),
        output=str(output_path),
    )
