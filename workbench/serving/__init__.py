"""The serving side: Gradio apps (each in its env's interpreter) and JupyterLab as services
under a supervisor, their state files, health and ports, and the ssh tunnel that reaches
them. The runner that serves an app inside its env is workbench.runtime.app_runner."""
