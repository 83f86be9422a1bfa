"""OpenTelemetry spans of an engine's requests, when OTEL_EXPORTER_OTLP_ENDPOINT is set.

Each request becomes a span "request" (its parent taken from the caller's `traceparent`
header) with three children laid end to end: "queue" (waiting for a worker), "prefill"
(sent to the worker until its first token) and "decode" (first token to the last); for a task
that answers at once, "batch" (waiting in the worker for batch-mates) and "inference" (its
batch running). They are made when the request ends, from the times the front noted, and
exported over OTLP/HTTP by a batch processor. The packages (opentelemetry-sdk,
opentelemetry-exporter-otlp-proto-http) are optional: without them the engine logs one
warning and serves untraced.
"""

from __future__ import annotations

import os


class Tracer:
    def __init__(self, name: str, log):
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.propagate import extract
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", name)})
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer("workbench.engine")
        self.trace, self.extract = trace, extract
        self.server_kind = trace.SpanKind.SERVER
        log.info(
            "tracing to OTLP",
            extra={"fields": {"endpoint": os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")}},
        )

    def record(self, stream, endpoint: str, headers: dict[str, str], status: int) -> None:
        end = stream.done_ns or _now()
        attributes = {
            "http.route": endpoint,
            "http.response.status_code": status,
            "gen_ai.usage.input_tokens": stream.prompt_tokens,
            "gen_ai.usage.output_tokens": stream.tokens,
        }
        if stream.finish:
            attributes["gen_ai.response.finish_reasons"] = [stream.finish]
        if stream.worker is not None:
            attributes["workbench.worker.pid"] = stream.worker.pid
        root = self.tracer.start_span(
            "request",
            context=self.extract(headers),
            kind=self.server_kind,
            start_time=stream.created_ns,
            attributes=attributes,
        )
        if stream.failure is not None:
            error = self.trace.Status(self.trace.StatusCode.ERROR, stream.failure.message)
            root.set_status(error)
        parent = self.trace.set_span_in_context(root)
        dispatched = stream.dispatched_ns or end
        self._child("queue", parent, stream.created_ns, dispatched)
        if stream.dispatched_ns:
            first = stream.first_ns or end
            # a generation: prefill to its first token, then decode; a task that answers at
            # once: its wait for batch-mates, then the batch's inference
            waited, ran = (
                ("prefill", "decode") if stream.kind == "generate" else ("batch", "inference")
            )
            self._child(waited, parent, dispatched, first)
            if stream.first_ns:
                self._child(ran, parent, first, end)
        root.end(end_time=end)

    def _child(self, name: str, parent, start: int, end: int) -> None:
        self.tracer.start_span(name, context=parent, start_time=start).end(end_time=max(start, end))

    def close(self) -> None:
        self.provider.shutdown()


def from_environment(name: str, log) -> Tracer | None:
    """A Tracer when OTEL_EXPORTER_OTLP_ENDPOINT (or its traces variant) is set."""
    if not (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return None
    try:
        return Tracer(name, log)
    except ImportError as exc:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but this env cannot export traces "
            f"({exc}); add opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http to it"
        )
        return None


def _now() -> int:
    import time

    return time.time_ns()
