"""The notebooks side: parameters, execution in env kernels with papermill, the run
lifecycle and its records, baselines, and notebooks as tests (`workbench test`, pytest)."""
