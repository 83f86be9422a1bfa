"""Continuous batching of a Hugging Face causal LM, inside an engine-core process.

Every running request is a row of one batch. A request that arrives joins at the next step:
its prompt is prefilled on its own (its first token comes from that pass) and its keys and
values are copied into the batch's cache; a finished or cancelled request leaves at once (the
last row moves into its place). Each step then runs the model once for all rows, one token
each, and samples every row with its own temperature, top_k, top_p and seed.

The cache (Slots) holds, per layer, key and value buffers of [rows, heads, columns, head_dim]
that grow in place: all rows write their next token at the same column `length`, and a row
that joined later has empty columns on its left, masked out. Writing in place instead of
concatenating (transformers' DynamicCache) and prefilling only the newcomers instead of
paging every step (transformers' continuous-batching manager) is what makes one stream faster
than `generate` and 32 streams several times faster than one (bench/serving.py prints
the figures).

Supported: decoder-only models whose cache layers are all full attention (DynamicLayer) and
whose forward takes attention_mask and position_ids, which is what batched `generate` with
left padding needs too (GPT-2, Llama, Qwen2, Mistral without sliding window, ...).
"""

from __future__ import annotations

import inspect

FINISH_STOP, FINISH_LENGTH = "stop", "length"


class Unsupported(Exception):
    """The model cannot be batched this way; the message says why."""


class Row:
    """One running request: where it is and how to sample it."""

    __slots__ = (
        "rid",
        "remaining",
        "position",
        "start",
        "temperature",
        "top_k",
        "top_p",
        "generator",
        "eos",
        "last",
    )

    def __init__(self, rid: str, params: dict, prompt_len: int, context: int, eos: frozenset):
        self.rid = rid
        self.remaining = min(int(params["max_tokens"]), context - prompt_len)
        self.position = prompt_len - 1  # position id of `last`, once it is sampled
        self.start = 0  # first column of this row's tokens in the cache
        self.temperature = float(params.get("temperature", 1.0))
        self.top_k = int(params.get("top_k") or 0)
        self.top_p = float(params.get("top_p", 1.0))
        self.generator = None
        self.eos = frozenset() if params.get("ignore_eos") else eos
        self.eos = self.eos | frozenset(params.get("stop_token_ids") or ())
        self.last = 0  # the token fed at the next step


def _layer_class():
    """A transformers cache layer that reads and writes the engine's shared buffers."""
    from transformers.cache_utils import DynamicLayer

    class SlotLayer(DynamicLayer):
        def __init__(self, slots: Slots, index: int):
            super().__init__()
            self.slots, self.index = slots, index
            self.is_initialized = True

        def lazy_initialization(self, key_states, value_states) -> None:
            pass

        def update(self, key_states, value_states, *args, **kwargs):
            return self.slots.write(self.index, key_states, value_states)

        def get_seq_length(self) -> int:
            return self.slots.length

        def get_mask_sizes(self, query, *args) -> tuple[int, int]:
            q = query if isinstance(query, int) else int(query.shape[0])
            return self.slots.length + q, 0

        def get_max_length(self) -> int:
            return -1

    return SlotLayer


class Slots:
    """The batch's key/value cache: rows [0, rows) are live; columns [0, length) are used."""

    def __init__(self, torch, n_layers: int, max_rows: int, max_columns: int | None):
        from transformers.cache_utils import Cache

        self.torch = torch
        self.max_rows, self.max_columns = max_rows, max_columns
        self.keys: list = [None] * n_layers
        self.values: list = [None] * n_layers
        self.rows = 0
        self.length = 0
        layer = _layer_class()
        self.cache = Cache(layers=[layer(self, i) for i in range(n_layers)])

    def write(self, layer: int, key, value):
        """A forward pass's new keys/values for the live rows, at column `length`."""
        q = key.shape[-2]
        end = self.length + q
        k, v = self.keys[layer], self.values[layer]
        k[: self.rows, :, self.length : end] = key
        v[: self.rows, :, self.length : end] = value
        return k[: self.rows, :, :end], v[: self.rows, :, :end]

    def capacity(self) -> tuple[int, int]:
        k = self.keys[0]
        return (0, 0) if k is None else (k.shape[0], k.shape[2])

    def reserve(self, rows: int, columns: int, like: list) -> None:
        """Make room for `rows` rows and `columns` columns (buffers grow by doubling)."""
        have_rows, have_cols = self.capacity()
        if rows <= have_rows and columns <= have_cols:
            return
        new_rows = min(self.max_rows, max(rows, 2 * have_rows, 1))
        new_cols = max(columns, 2 * have_cols, 16)
        if self.max_columns:
            new_cols = max(columns, min(new_cols, self.max_columns))
        for store in (self.keys, self.values):
            for i, old in enumerate(store):
                shape = like[i].shape if old is None else old.shape
                fresh = self.torch.zeros(
                    (new_rows, shape[1], new_cols, shape[3]),
                    dtype=like[i].dtype,
                    device=like[i].device,
                )
                if old is not None and self.rows:
                    fresh[: self.rows, :, : self.length] = old[: self.rows, :, : self.length]
                store[i] = fresh

    def shift(self, offset: int) -> None:
        """Move every live row's columns by offset (right > 0, left < 0)."""
        if not offset or not self.rows:
            self.length += offset
            return
        lo = max(0, -offset)
        for store in (self.keys, self.values):
            for buf in store:
                part = buf[: self.rows, :, lo : self.length].clone()
                buf[: self.rows, :, lo + offset : self.length + offset] = part
        self.length += offset

    def append(self, keys: list, values: list, columns: int) -> None:
        """Add prefilled rows whose caches are `columns` long, right-aligned at `length`."""
        n = keys[0].shape[0]
        self.reserve(self.rows + n, self.length, keys)
        lo = self.length - columns
        for store, new in ((self.keys, keys), (self.values, values)):
            for buf, part in zip(store, new):
                buf[self.rows : self.rows + n, :, :lo] = 0
                buf[self.rows : self.rows + n, :, lo : self.length] = part
        self.rows += n

    def move(self, src: int, dst: int) -> None:
        """Row src takes the place of row dst."""
        for store in (self.keys, self.values):
            for buf in store:
                buf[dst, :, : self.length] = buf[src, :, : self.length]

    def clear(self) -> None:
        self.rows = self.length = 0


class Generator:
    """The continuous-batching loop's state and its two operations: admit and step."""

    def __init__(self, model, torch, max_batch: int, eos: frozenset, context: int):
        from transformers.cache_utils import DynamicCache, DynamicLayer

        self.model, self.torch = model, torch
        self.max_batch, self.eos, self.context = max_batch, eos, context
        probe = DynamicCache(config=model.config)
        kinds = {type(layer) for layer in probe.layers}
        if not probe.layers or kinds != {DynamicLayer}:
            names = ", ".join(sorted(k.__name__ for k in kinds)) or "none"
            raise Unsupported(
                f"the engine batches models whose cache layers are all full attention "
                f"(DynamicLayer); {type(model).__name__} has {names}"
            )
        self.dynamic_cache = DynamicCache
        # transformers 5.24 renamed forward's past_key_values to cache
        forward = inspect.signature(model.forward).parameters
        self.cache_kwarg = "cache" if "cache" in forward else "past_key_values"
        self.slots = Slots(torch, len(probe.layers), max_batch, context)
        self.rows: list[Row] = []
        self.device = model.device
        self.steps = 0

    @property
    def room(self) -> int:
        return self.max_batch - len(self.rows)

    def admit(
        self, requests: list[tuple[str, list[int], dict]]
    ) -> list[tuple[str, list[int], str | None]]:
        """Prefill new requests together (left-padded to the longest) and add them to the
        batch; returns each one's first token (or its end)."""
        with self.torch.inference_mode():
            return self._admit(requests)

    def step(self) -> list[tuple[str, list[int], str | None]]:
        """One token for every running row."""
        with self.torch.inference_mode():
            return self._step()

    def cancel(self, rid: str) -> bool:
        with self.torch.inference_mode():
            for i, row in enumerate(self.rows):
                if row.rid == rid:
                    self._remove(i)
                    return True
        return False

    def _admit(self, requests):
        torch = self.torch
        rows = [Row(rid, params, len(ids), self.context, self.eos) for rid, ids, params in requests]
        for row, (_, _, params) in zip(rows, requests):
            if params.get("seed") is not None:
                row.generator = torch.Generator(device=self.device).manual_seed(int(params["seed"]))
        longest = max(len(ids) for _, ids, _ in requests)
        padded = any(len(ids) != longest for _, ids, _ in requests)
        input_ids = torch.zeros((len(requests), longest), dtype=torch.long)
        mask = torch.zeros((len(requests), longest), dtype=torch.long)
        for i, (_, ids, _) in enumerate(requests):
            input_ids[i, longest - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[i, longest - len(ids) :] = 1
        kwargs = {}
        if padded:
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            kwargs = {
                "attention_mask": mask.to(self.device),
                "position_ids": positions.to(self.device),
            }
        cache = self.dynamic_cache(config=self.model.config)
        kwargs[self.cache_kwarg] = cache
        out = self.model(
            input_ids=input_ids.to(self.device), use_cache=True, logits_to_keep=1, **kwargs
        )
        tokens = self._sample(out.logits[:, -1, :], rows)
        keys = [layer.keys for layer in cache.layers]
        values = [layer.values for layer in cache.layers]
        if longest > self.slots.length:
            self.slots.reserve(self.slots.rows, longest, keys)
            shift = longest - self.slots.length
            self.slots.shift(shift)
            for row in self.rows:
                row.start += shift
        self.slots.append(keys, values, longest)
        for row, (_, ids, _) in zip(rows, requests):
            row.start = self.slots.length - len(ids)
        self.rows.extend(rows)
        return self._advance(rows, tokens, first=len(self.rows) - len(rows))

    def _step(self):
        torch, slots = self.torch, self.slots
        self._make_room()
        input_ids = torch.tensor(
            [[r.last] for r in self.rows], dtype=torch.long, device=self.device
        )
        positions = torch.tensor(
            [[r.position] for r in self.rows], dtype=torch.long, device=self.device
        )
        kwargs = {}
        starts = [r.start for r in self.rows]
        if any(starts):
            columns = torch.arange(slots.length + 1, device=self.device)
            start = torch.tensor(starts, device=self.device)
            kwargs["attention_mask"] = (columns[None, :] >= start[:, None]).long()
        kwargs[self.cache_kwarg] = slots.cache
        out = self.model(input_ids=input_ids, position_ids=positions, use_cache=True, **kwargs)
        slots.length += 1
        tokens = self._sample(out.logits[:, -1, :], self.rows)
        self.steps += 1
        return self._advance(list(self.rows), tokens, first=0)

    def clear(self) -> list[str]:
        """Drop every row (after a failed step); their ids."""
        rids = [r.rid for r in self.rows]
        self.rows = []
        self.slots.clear()
        return rids

    # -- internals --------------------------------------------------------------------------
    def _advance(self, rows: list[Row], tokens: list[int], first: int):
        """Record each row's new token; finished rows leave the batch."""
        outputs = []
        done = []
        for i, (row, token) in enumerate(zip(rows, tokens)):
            row.position += 1
            row.remaining -= 1
            row.last = token
            if token in row.eos:
                outputs.append((row.rid, [], FINISH_STOP))
                done.append(first + i)
            elif row.remaining <= 0:
                outputs.append((row.rid, [token], FINISH_LENGTH))
                done.append(first + i)
            else:
                outputs.append((row.rid, [token], None))
        for index in reversed(done):
            self._remove(index)
        return outputs

    def _remove(self, index: int) -> None:
        last = len(self.rows) - 1
        if index != last:
            self.slots.move(last, index)
            self.rows[index] = self.rows[last]
        self.rows.pop()
        self.slots.rows -= 1
        if not self.rows:
            self.slots.clear()

    def _make_room(self) -> None:
        """One free column for this step: drop columns no row uses, else grow."""
        slots = self.slots
        _, columns = slots.capacity()
        if slots.length < columns:
            return
        lead = min(r.start for r in self.rows)
        if lead:
            slots.shift(-lead)
            for row in self.rows:
                row.start -= lead
        else:
            slots.reserve(slots.rows, slots.length + 1, slots.keys)

    def _sample(self, logits, rows: list[Row]) -> list[int]:
        """Next token of each row: greedy at temperature 0, else sampled from the
        temperature-scaled distribution cut to top_k and top_p, with the row's seed."""
        torch = self.torch
        if all(r.temperature <= 0 for r in rows):
            return logits.argmax(-1).tolist()
        logits = logits.float()
        temps = [r.temperature if r.temperature > 0 else 1.0 for r in rows]
        if len(set(temps)) == 1:
            logits = logits / temps[0]
        else:
            logits = logits / torch.tensor(temps, device=logits.device)[:, None]
        vocab = logits.shape[-1]
        ks = [r.top_k if 0 < r.top_k < vocab else vocab for r in rows]
        kmax = max(ks)
        if kmax < vocab or any(r.top_p < 1.0 for r in rows):
            values, indices = torch.topk(logits, kmax, dim=-1)
            if min(ks) < kmax:
                cut = torch.tensor(ks, device=logits.device)[:, None]
                values = values.masked_fill(
                    torch.arange(kmax, device=logits.device) >= cut, -float("inf")
                )
            if any(r.top_p < 1.0 for r in rows):
                probs = values.softmax(-1)
                before = probs.cumsum(-1) - probs  # probability mass of the better tokens
                ps = torch.tensor([r.top_p for r in rows], device=logits.device)[:, None]
                values = values.masked_fill(before >= ps, -float("inf"))
        else:
            values, indices = logits, None
        probs = values.softmax(-1)
        picked = [0] * len(rows)
        seeded = [i for i, r in enumerate(rows) if r.generator is not None]
        free = [i for i, r in enumerate(rows) if r.generator is None]
        if free:
            chosen = torch.multinomial(probs[free] if seeded else probs, 1)[:, 0]
            for i, c in zip(free, chosen.tolist()):
                picked[i] = c
        for i in seeded:
            picked[i] = int(torch.multinomial(probs[i], 1, generator=rows[i].generator))
        if indices is not None:
            picked = indices.gather(-1, torch.tensor(picked, device=logits.device)[:, None])[:, 0]
            picked = picked.tolist()
        greedy = [i for i, r in enumerate(rows) if r.temperature <= 0]
        if greedy:
            best = logits[greedy].argmax(-1).tolist()
            for i, b in zip(greedy, best):
                picked[i] = b
        return picked


def eos_ids(model) -> frozenset:
    """The token ids that end a generation, from the model's generation config."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if ids is None:
        ids = getattr(model.config, "eos_token_id", None)
    if ids is None:
        return frozenset()
    return frozenset(ids if isinstance(ids, (list, tuple)) else [ids])


def context_length(config) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
