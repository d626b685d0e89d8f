"""PEFT itself against wgtrain: loads the base model with transformers, puts wgtrain's LoRA
adapter on it with peft.PeftModel.from_pretrained, runs the tokens wgtrain ran, and prints
the largest difference between the two sets of logits as JSON.

    python3 peft_check.py BASE ADAPTER_DIR LOGITS_JSON [MERGED_DIR]

BASE is a Hugging Face directory or a GGUF file (transformers reads it with gguf_file=);
LOGITS_JSON holds {"tokens": [...], "logits": [[...], ...]} from wgtrain (one row per token).
With MERGED_DIR (`wgtrain merge --model BASE --lora ADAPTER_DIR --hf MERGED_DIR`), transformers
loads that directory too, and its logits are compared the same way.
Needs torch, transformers, peft (and gguf for a GGUF base); `cargo test` runs it through
tests/train/finetune.rs where they import, and says so where they do not.
"""
import json
import os
import sys

import numpy as np
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

base, adapter, ref = sys.argv[1:4]
want = json.load(open(ref))
kwargs = {"dtype": torch.float32}
if base.endswith(".gguf"):
    kwargs["gguf_file"] = os.path.basename(base)
    base = os.path.dirname(base) or "."
model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
model = PeftModel.from_pretrained(model, adapter)
model.eval()
with torch.no_grad():
    logits = model(torch.tensor([want["tokens"]])).logits[0].double().numpy()
got = np.array(want["logits"], dtype=np.float64)
got = got.reshape(logits.shape[0], -1)[:, : logits.shape[1]]
out = {"max_abs_diff": float(np.abs(logits - got).max())}
if len(sys.argv) > 4:
    merged = AutoModelForCausalLM.from_pretrained(sys.argv[4], dtype=torch.float32)
    merged.eval()
    with torch.no_grad():
        m = merged(torch.tensor([want["tokens"]])).logits[0].double().numpy()
    out["merged_max_abs_diff"] = float(np.abs(m - got).max())
print(json.dumps(out))
