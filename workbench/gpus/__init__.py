"""GPUs on a shared server: what nvidia-smi sees (inventory), who holds which GPU
(machine-wide leases), the assignment a kernel, app or run gets at start (assign), the
Jupyter kernel provisioner that applies it to kernels started by any Jupyter tool, and the
report `workbench gpus` prints."""
