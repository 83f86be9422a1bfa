"""What an engine must reproduce: the greedy text of `generate`, streamed."""

import json
import subprocess
from pathlib import Path

import openai

from tests.support.paths import TEXTGEN

GREEDY = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
path, prompts, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path).eval()
out = []
for p in prompts:
    ids = tok(p, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        g = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                           max_new_tokens=n, min_new_tokens=n, pad_token_id=0)
    out.append(tok.decode(g[0, ids.shape[1]:], skip_special_tokens=True))
print(json.dumps(out))
"""


def greedy_texts(model: str | Path, prompts: list[str], tokens: int) -> list[str]:
    """What greedy `generate` makes of each prompt (tokens new tokens), in the textgen env."""
    reference = subprocess.run(
        [str(TEXTGEN), "-c", GREEDY, str(model), json.dumps(prompts), str(tokens)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert reference.returncode == 0, reference.stderr
    return json.loads(reference.stdout.strip().splitlines()[-1])


def assert_streams_greedy(
    client: openai.OpenAI, model: str, prompts: list[str], expected: list[str], tokens: int
) -> None:
    """Each prompt streamed greedily through client gives its expected text, in chunks."""
    for prompt, text in zip(prompts, expected, strict=True):
        stream = client.completions.create(
            model=model, prompt=prompt, max_tokens=tokens, temperature=0, stream=True
        )
        chunks = [c.choices[0].text for c in stream]
        assert "".join(chunks) == text and text
        assert len(chunks) > 1 or "\ufffd" in text  # streamed as it came
