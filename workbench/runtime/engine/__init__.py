"""An engine per model: an OpenAI-compatible HTTP front (server, api, textproc, metrics,
tracing) and the engine-core processes it starts (core; batching for generation, embedding,
predict for pipelines and handlers, adaptive for the batches of the tasks that answer at once),
joined by socketpairs (protocol) and managed by the front's pool (workers).

`python -m workbench.runtime.engine --help` starts one (commandline: its options, from the
settings declared once in settings; config: the checks before a core starts);
workbench.serving.engines builds its command line from workbench.toml. Like the rest of
workbench.runtime this runs inside env interpreters: the standard library and the env's
packages only, imported where they are used (a core imports torch; the front never does).
"""
