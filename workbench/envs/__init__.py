"""The envs side: environment.yml specs, their backends (conda, mamba, micromamba, uv),
builds and locks, interpreters, the machine's pip configuration, and Jupyter kernels."""
