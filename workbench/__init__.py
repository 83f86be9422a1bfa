"""workbench: env specs to isolated envs, locks and Jupyter kernels."""

__version__ = "0.1.0"
