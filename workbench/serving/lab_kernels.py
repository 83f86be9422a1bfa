"""Loaded into the tool's JupyterLab (ServerApp.kernel_spec_manager_class): Jupyter's kernel
spec manager, listing only the project's kernels (workbench.envs.kernels.listed).

So Lab never offers the tool's own python3 kernel, nor kernels of other projects, and a
kernel built while Lab runs is listed at once (the list is read on every request, as Jupyter
does). Only listing is filtered: a notebook saved with a hidden kernel still opens, and Lab
starts the project kernel of its language instead (or asks which, when there are several).
"""

from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager
from traitlets import Unicode

from workbench import project as projects
from workbench.envs import kernels


class ProjectKernelSpecManager(KernelSpecManager):
    project_root = Unicode(config=True, help="The workbench project whose kernels Lab lists.")

    def find_kernel_specs(self) -> dict[str, str]:
        found = super().find_kernel_specs()
        root = Path(self.project_root)
        # Listing needs only the project's paths: no manifest read, so editing it while
        # Lab runs cannot break the Launcher.
        ours = {spec.name for spec in kernels.listed(projects.Project(root, root.name))}
        return {name: folder for name, folder in found.items() if name in ours}
