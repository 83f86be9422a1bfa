"""A handler for the predict engine's tests: scales vectors by the model folder's "scale".

Its inputs say what to do: the string "bad" fails in preprocess, a vector summing to 13 fails
in predict (the batch is retried input by input), a vector starting with a negative number
sleeps that many seconds first (a batch that is still running).
"""

import json
import os
import time
from pathlib import Path


class Model:
    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1]}]
    outputs = [{"name": "y", "datatype": "FP32", "shape": [-1]}]

    def setup(self, device):
        import torch

        self.torch = torch
        self.scale = json.loads((Path(self.model_path) / "config.json").read_text())["scale"]

    def preprocess(self, item):
        if item == "bad":
            raise ValueError("bad is not a vector")
        return self.torch.tensor(item, dtype=self.torch.float32)

    def predict(self, batch):
        if any(float(x.sum()) == 13 for x in batch):
            raise ValueError("13 brings bad luck")
        for x in batch:
            if len(x) and float(x[0]) < 0:
                time.sleep(-float(x[0]))
        return list(self.torch.stack(batch) * self.scale)

    def postprocess(self, output):
        return {"y": output, "batch_pid": os.getpid()}
