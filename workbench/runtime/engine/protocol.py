"""Frames between an engine's HTTP front and its engine-core processes.

One connected Unix stream socket per process (socketpairs made by the front: the zygote gets
its end as an inherited file descriptor, each core its own by SCM_RIGHTS with the request to
fork it), so nothing listens on the file system or the network. A frame is a 4-byte
big-endian length and a pickled tuple whose first item names it:

  front -> zygote  ("fork", worker, device)  + the new core's socket as a file descriptor
  zygote -> front  ("zygote", info)          the model is loaded
                   ("forked", worker, pid)
                   ("fatal", message)        the model cannot load
  front -> core    (task, rid, payload, params)   task: generate (payload: prompt ids;
                                  params: see batching.Row), embed ([ids, ...], {}) or
                                  predict ([input, ...], pipeline kwargs; see predict.Predictor)
                   ("cancel", rid)
                   ("exit",)                 finish what runs, then exit
  core -> front    ("ready", info)           warmed up on its device
                   ("tokens", batch_size, [(rid, new_ids, finish_reason or None), ...])
                   ("started", [rid, ...])   a task that answers at once began a batch
                   ("results", [(rid, result), ...], {"batch": inputs, "inference_s": s})
                                  embed: (float32 bytes, dim); predict: [output, ...]
                   ("failed", rid, code, message)   code: a failures.Failure value
                   ("fatal", message)        this core cannot start

Both ends are processes of one engine started from the same interpreter, so pickle is safe
here; it is also the fastest codec the standard library has for these small tuples.
"""

from __future__ import annotations

import pickle
import socket
import struct
from typing import Callable

HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 30


def encode(message: tuple) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


class Decoder:
    """Splits a byte stream into messages; feed() returns the complete ones."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple]:
        self.buffer += data
        messages = []
        start, size = 0, len(self.buffer)
        while size - start >= HEADER.size:
            (length,) = HEADER.unpack_from(self.buffer, start)
            if length > MAX_FRAME:
                raise ValueError(f"engine frame of {length} bytes")
            end = start + HEADER.size + length
            if end > size:
                break
            messages.append(pickle.loads(self.buffer[start + HEADER.size : end]))
            start = end
        if start:
            del self.buffer[:start]
        return messages


def read_forever(sock: socket.socket, handle: Callable[[tuple], None]) -> None:
    """Blocking: hand every message from sock to handle until the peer closes it."""
    decoder = Decoder()
    while True:
        try:
            data = sock.recv(1 << 16)
        except OSError:
            return
        if not data:
            return
        for message in decoder.feed(data):
            handle(message)
