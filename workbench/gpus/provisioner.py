"""The Jupyter kernel provisioner that gives kernels their GPUs, whoever starts them
(JupyterLab, papermill, nbval, jupyter_client): registered under the entry point group
`jupyter_client.kernel_provisioners` as "workbench-gpus" and named in the kernelspec of
every env whose manifest entry asks for GPUs (assign.provisioner_metadata):

    "metadata": {"kernel_provisioner": {"provisioner_name": "workbench-gpus",
                                        "config": {"count": 1}}}       (or "pin": ["0"])

At launch it sets CUDA_VISIBLE_DEVICES from the assignment (workbench.gpus.assign); the
lease then lives as long as the kernel process and is freed at shutdown (a kernel killed
outside Jupyter leaves a lease whose holder is dead, which counts as free).
"""

import asyncio
import os
from typing import Any

from jupyter_client.provisioning import LocalProvisioner
from traitlets import Integer, List, Unicode

from workbench.gpus import assign
from workbench.gpus.leases import Holder, hand_over
from workbench.runtime import contract


class GpuProvisioner(LocalProvisioner):
    """A local kernel whose CUDA_VISIBLE_DEVICES is decided (and leased) at launch."""

    pin = List(Unicode(), help="GPU indices pinned in the manifest").tag(config=True)
    count = Integer(0, help="how many GPUs to lease at launch").tag(config=True)

    assignment: assign.Assignment | None = None

    def _holder(self, env: dict[str, str]) -> Holder:
        kind, _, name = (contract.LEASE_FOR.get(env) or "").partition(" ")
        kernel = getattr(self.parent, "kernel_name", "") or "kernel"
        session = env.get("JPY_SESSION_NAME")  # the notebook, for kernels Jupyter Server starts
        return Holder(
            kind=kind or "kernel",
            name=name or (f"{kernel} ({os.path.basename(session)})" if session else kernel),
            project=contract.PROJECT.raw(env),
            kernel_id=self.kernel_id,
            launcher_pid=os.getpid(),
        )

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        kwargs = await super().pre_launch(**kwargs)
        env = kwargs["env"]
        holder = self._holder(env)
        self.assignment = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: assign.assign(
                self.pin, self.count, holder, env, assign.wait_from(env), self.log.warning
            ),
        )
        if self.assignment.note:
            self.log.warning(self.assignment.note)
        env.update(self.assignment.environ())
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> dict:
        try:
            info = await super().launch_kernel(cmd, **kwargs)
        except BaseException:
            if self.assignment is not None:
                self.assignment.release()
            raise
        if self.assignment is not None and self.assignment.lease is not None:
            hand_over(self.assignment.lease, self.pid)
        return info

    async def cleanup(self, restart: bool = False) -> None:
        if self.assignment is not None:
            self.assignment.release()
            self.assignment = None
        await super().cleanup(restart=restart)
