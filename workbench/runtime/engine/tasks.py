"""The routes of each task an engine serves, apart from the machinery every task shares.

An endpoint turns a request body into a Job (what the task's cores take, and what its answer
needs) and writes the answer of a job that finished. The engine's one request path
(`Engine.run_task` in workbench.runtime.engine.server) does the rest for every task: it submits
the job to the pool, cancels it when the client leaves, waits, answers failures from their
typed code, and traces it. A new task is a class here, an entry in ENDPOINTS and its loop in
the cores.
"""

from __future__ import annotations

import asyncio
import uuid

from workbench.runtime.engine import api, textproc
from workbench.runtime.engine.responses import chunk, json_response


class Job:
    """One request, parsed: its id, the payload and params its task's cores take, its prompt
    tokens, whether its answer streams, and what the endpoint needs to answer it."""

    __slots__ = ("rid", "payload", "params", "prompt_tokens", "streamed", "request")

    def __init__(
        self,
        rid: str,
        payload: list,
        params: dict,
        prompt_tokens: int,
        request: object,
        streamed: bool = False,
    ):
        self.rid, self.payload, self.params = rid, payload, params
        self.prompt_tokens, self.request, self.streamed = prompt_tokens, request, streamed


class Completions:
    """/v1/completions and /v1/chat/completions: token ids in, token ids out as they come."""

    task = "generate"

    def __init__(self, chat: bool):
        self.chat = chat

    def parse(self, engine, body: object) -> Job:
        request = api.parse_generation(body, self.chat, engine.limits, engine.tokenizer)
        return Job(
            request.id, request.ids, request.params, len(request.ids), request, request.stream
        )

    async def answer(self, engine, send, stream, job: Job) -> None:
        request = job.request
        text = engine.tokenizer.decode(stream.take())
        finish = stream.finish
        cut = [i for i in (text.find(s) for s in request.stop) if i >= 0]
        if cut:
            text, finish = text[: min(cut)], "stop"
        body = api.completion(request, engine.name, text, finish, stream.tokens)
        await json_response(send, 200, body)

    async def stream(self, engine, send, stream, job: Job) -> None:
        """Server-sent events while the tokens come: fewer, fuller chunks when many stream."""
        request = job.request
        chunks = api.Chunks(request, engine.name)
        text = engine.tokenizer.stream()
        stops = textproc.StopStrings(request.stop)
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-request-id", request.id.encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if request.chat:
            await chunk(send, chunks.role())
        loop = asyncio.get_running_loop()
        sent = 0.0  # when the last chunk with text went out
        while True:
            if not stream.ids and not stream.done and not stream.cancelled:
                await stream.event.wait()
            delay = sent + engine.pool.stream_interval() - loop.time()
            if sent and delay > 0 and not stream.done:
                await asyncio.sleep(delay)
            if stream.cancelled and not stream.done:
                return  # the client left
            ids = stream.take()
            out, stopped = stops.feed(text.feed(ids)) if ids else ("", False)
            finish = None
            if stopped:
                engine.pool.cancel(stream)
                finish = "stop"
            elif stream.finish is not None:
                tail, stopped = stops.feed(text.finish())
                out += tail if stopped else tail + stops.flush()
                finish = "stop" if stopped else stream.finish
            if stream.failure is not None and finish is None:
                if out:
                    await chunk(send, chunks.text(out))
                await chunk(send, chunks.error(stream.failure) + chunks.DONE, more=False)
                return
            if finish is not None:
                data = chunks.text(out, finish)
                if request.include_usage:
                    data += chunks.usage(len(request.ids), stream.tokens)
                await chunk(send, data + chunks.DONE, more=False)
                return
            if out:
                await chunk(send, chunks.text(out))
                sent = loop.time()


class Embeddings:
    """/v1/embeddings: token ids of each input in, one vector per input back."""

    task = "embed"

    def parse(self, engine, body: object) -> Job:
        inputs = api.parse_embeddings(body, engine.limits, engine.tokenizer)
        tokens = sum(len(ids) for ids in inputs)
        return Job("emb-" + uuid.uuid4().hex, inputs, {}, tokens, body.get("encoding_format"))

    async def answer(self, engine, send, stream, job: Job) -> None:
        data, dim = stream.result
        body = api.embeddings(engine.name, data, dim, job.prompt_tokens, job.request)
        await json_response(send, 200, body)


ENDPOINTS = {
    "/v1/completions": Completions(chat=False),
    "/v1/chat/completions": Completions(chat=True),
    "/v1/embeddings": Embeddings(),
}
