"""Pieces of the engine's front that need no model: frames between processes, stop strings
and where workers go. (Imported straight from workbench.runtime: standard library only.)"""

import os
import pickle
import random

import pytest

from workbench.runtime.engine import protocol, server, textproc


def test_frames_survive_any_split_of_the_stream() -> None:
    messages = [("tokens", 3, [("r1", [1, 2], None), ("r2", [], "stop")]), ("ready", {"x": 1})]
    messages += [("failed", "r3", "é" * 1000), ("embeddings", [("r4", b"\0" * 4096, 1024, 5)])]
    data = b"".join(protocol.encode(m) for m in messages)
    rng = random.Random(0)
    for _ in range(50):
        decoder, got, i = protocol.Decoder(), [], 0
        while i < len(data):
            step = rng.randint(1, 300)
            got += decoder.feed(data[i : i + step])
            i += step
        assert got == messages and not decoder.buffer


def test_a_frame_claiming_a_gigabyte_is_refused() -> None:
    with pytest.raises(ValueError, match="engine frame of"):
        protocol.Decoder().feed(protocol.HEADER.pack(protocol.MAX_FRAME + 1) + b"x")
    assert protocol.Decoder().feed(protocol.encode(("x",))[:-1]) == []
    assert pickle.loads(protocol.encode(("x", 1))[4:]) == ("x", 1)


@pytest.mark.parametrize(
    ("pieces", "stops", "out", "stopped"),
    [
        (["Hello wor", "ld! END more"], ["END"], "Hello world! ", True),
        (["abc", "de", "f"], ["xyz"], "abcdef", False),  # held back, then flushed
        (["a<", "|e", "nd|>b"], ["<|end|>", "b"], "a", True),
        (["one ", "two"], [], "one two", False),
        (["xE", "N", "Dy"], ["END", "Dy"], "x", True),  # the earliest stop wins
    ],
)
def test_stop_strings_cut_streamed_text(pieces, stops, out, stopped) -> None:
    cutter = textproc.StopStrings(stops)
    text, hit = "", False
    for piece in pieces:
        part, hit = cutter.feed(piece)
        text += part
        if hit:
            break
    if not hit:
        text += cutter.flush()
    assert (text, hit) == (out, stopped)


def test_text_that_could_start_a_stop_is_held_back_only_that_long() -> None:
    cutter = textproc.StopStrings(["STOP"])
    assert cutter.feed("abcST") == ("abc", False)  # "ST" could be the start of "STOP"
    assert cutter.feed("xyz") == ("STxyz", False)
    assert cutter.feed("ST") == ("", False)
    assert cutter.feed("OP and on") == ("", True)


@pytest.mark.parametrize(
    ("visible", "requested", "expected"),
    [
        ("", "auto", [None]),
        ("0,1", "auto", ["0", "1"]),
        (" 3 ", "auto", ["3"]),
        ("-1", "auto", [None]),
        ("0,1", "cpu", [None]),
        ("2", "cuda", ["2"]),
    ],
)
def test_workers_spread_over_the_visible_gpus(monkeypatch, visible, requested, expected) -> None:
    """No GPU here: CUDA_VISIBLE_DEVICES alone decides (the front never imports torch)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert server.devices(requested) == expected


def test_cuda_without_a_visible_gpu_is_an_error(monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(ValueError, match="names no GPU"):
        server.devices("cuda")


def test_keys_come_from_the_environment_and_a_private_file(monkeypatch, tmp_path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# one a line\nsk-file\n\n")
    keys.chmod(0o600)
    monkeypatch.setenv(server.KEYS_VARIABLE, "sk-a, sk-b")
    assert server.read_keys(str(keys)) == ["sk-a", "sk-b", "sk-file"]
    assert server.KEYS_VARIABLE not in os.environ  # what the cores inherit holds no key
    keys.chmod(0o640)
    with pytest.raises(ValueError, match=r"open to other users \(mode 0640\)"):
        server.read_keys(str(keys))


def test_the_tool_side_command_line_is_what_the_engine_parses() -> None:
    """workbench.serving.engines.arguments (also what an image's launcher runs) against the
    engine's own parser: every setting of [engines.NAME] arrives."""
    from workbench.project import EngineEntry
    from workbench.serving import engines

    entry = EngineEntry(
        "gpt", "textgen", "models/gpt", 8100, task="generate", workers=2, threads=3,
        max_batch=16, max_queue=8, max_requests=500, max_rss_mb=900, max_tokens=256,
        max_prompt_tokens=1024, max_body_kb=64, timeout=12.5,
    )  # fmt: skip
    argv = engines.arguments(entry, "/models/gpt", "{host}", "{port}")
    assert argv[:2] == ["-m", "workbench.runtime.engine"]
    parsed = server._arguments([a.replace("{port}", "9000") for a in argv[2:]])
    assert (parsed.name, parsed.model, parsed.task, parsed.host, parsed.port) == (
        "gpt", "/models/gpt", "generate", "{host}", 9000
    )  # fmt: skip
    for field in ("workers", "threads", "max_batch", "max_queue", "max_requests", "max_tokens"):
        assert getattr(parsed, field) == getattr(entry, field), field
    assert (parsed.max_rss_mb, parsed.max_prompt_tokens, parsed.max_body_kb) == (900, 1024, 64)
    assert parsed.timeout == 12.5
