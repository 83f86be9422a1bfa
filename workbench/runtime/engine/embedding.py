"""Sentence embeddings in an engine-core process: the requests waiting at each step are
encoded together in one padded batch, mean-pooled over their tokens and L2-normalised (what
sentence-transformers does for all-MiniLM-L6-v2, and what gradio_apps/search.py did)."""

from __future__ import annotations


class Embedder:
    def __init__(self, model, torch, max_batch: int):
        self.model, self.torch, self.max_batch = model, torch, max_batch
        self.device = model.device

    def take(self, pending: list) -> list:
        """The requests of the next batch (at least one, at most max_batch inputs)."""
        batch, inputs = [], 0
        while pending and (not batch or inputs + len(pending[0][1]) <= self.max_batch):
            request = pending.pop(0)
            batch.append(request)
            inputs += len(request[1])
        return batch

    def run(self, requests: list[tuple[str, list[list[int]]]]) -> list[tuple[str, tuple]]:
        """(rid, (float32 bytes of n x dim, dim)) for each (rid, [token ids, ...])."""
        torch = self.torch
        texts = [ids for _, inputs in requests for ids in inputs]
        longest = max(len(ids) for ids in texts)
        input_ids = torch.zeros((len(texts), longest), dtype=torch.long)
        mask = torch.zeros((len(texts), longest), dtype=torch.long)
        for i, ids in enumerate(texts):
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[i, : len(ids)] = 1
        with torch.inference_mode():
            hidden = self.model(
                input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)
            ).last_hidden_state
            weights = mask.to(self.device).unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            vectors = torch.nn.functional.normalize(pooled, p=2, dim=1).float().cpu()
        out, row = [], 0
        for rid, inputs in requests:
            part = vectors[row : row + len(inputs)]
            row += len(inputs)
            out.append((rid, (part.numpy().astype("<f4").tobytes(), part.shape[1])))
        return out
