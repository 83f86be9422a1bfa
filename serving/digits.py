"""The digits engine's handler: the small CNN that notebooks/train_digits.ipynb trains on
scikit-learn's 8x8 digits, served by `workbench up digits` ([engines.digits] in
workbench.toml). One input is an 8x8 image (lists of lists or an array) of intensities
0..16, as in `sklearn.datasets.load_digits`; its output is {"label": int, "scores": [10
probabilities]}.

The notebook imports `network` from here, so training and serving share one definition of
the model; models/digits/config.json holds its sizes and the input scale.
"""

import json
from pathlib import Path

import torch
from torch import nn


def network(config: dict) -> nn.Module:
    """The CNN for a config: two 3x3 convolutions, a 2x2 max-pool, two dense layers."""
    c1, c2 = config["channels"]
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * 4 * 4, config["hidden"]),
        nn.ReLU(),
        nn.Dropout(config["dropout"]),
        nn.Linear(config["hidden"], len(config["labels"])),
    )


class Model:
    inputs = [{"name": "image", "datatype": "FP32", "shape": [8, 8]}]
    outputs = [
        {"name": "label", "datatype": "INT64", "shape": [1]},
        {"name": "scores", "datatype": "FP32", "shape": [10]},
    ]
    model_path = "models/digits"  # the engine sets its model folder before setup

    def setup(self, device: str) -> None:
        folder = Path(self.model_path)
        self.config = json.loads((folder / "config.json").read_text())
        self.net = network(self.config)
        weights = torch.load(folder / "weights.pt", map_location=device, weights_only=True)
        self.net.load_state_dict(weights)
        self.net.to(device).eval()
        self.device = device

    def preprocess(self, item) -> torch.Tensor:
        """One image as a float tensor, refused unless it is 8x8 intensities 0..16."""
        try:
            image = torch.as_tensor(item, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError("image: expected 8x8 numbers 0..16 (a list of 8 lists)") from None
        if tuple(image.shape) != (8, 8):
            raise ValueError(f"image: expected 8x8 numbers 0..16, got shape {list(image.shape)}")
        top = self.config["max_value"]
        outside = image[~((image >= 0) & (image <= top))]  # NaN included
        if outside.numel():
            raise ValueError(f"image: values must lie in 0..{top:g}, got {outside[0].item():g}")
        return image

    def predict(self, batch: list) -> list:
        x = torch.stack([torch.as_tensor(item, dtype=torch.float32) for item in batch])
        x = x.to(self.device)
        with torch.inference_mode():
            scores = torch.softmax(self.net(x.unsqueeze(1) / self.config["max_value"]), dim=1)
        labels = self.config["labels"]
        return [{"label": labels[int(p.argmax())], "scores": p.tolist()} for p in scores.cpu()]
