#!/usr/bin/env python3
"""PyTorch + PEFT's LoRA fine-tuning step on this machine's CPU, beside `wgtrain finetune`'s:
the same model file, data directory, batch, rank and targets (LoRA r 8, alpha 16, q_proj and
v_proj; AdamW at 2e-4; batches of 4 records drawn in order, each padded to the batch's longest
rounded up to 16 tokens, the loss on the assistant turns). Median of the steps after 2 warm-up
steps, every CPU core torch is given.

    python3 benches/peft_finetune.py MODEL.gguf DATA_DIR [STEPS]

Needs torch, transformers, peft and gguf (pip); prints "peft: N ms/step, M tokens/s".
"""
import json
import os
import statistics
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

model_path, data_dir = sys.argv[1], sys.argv[2]
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 8
kw = {"gguf_file": os.path.basename(model_path)}
where = os.path.dirname(model_path) or "."
tok = AutoTokenizer.from_pretrained(where, **kw)
model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kw)
model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                         lora_dropout=0.0, task_type="CAUSAL_LM"))
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4,
                        weight_decay=0.0)

examples = []
for line in open(os.path.join(data_dir, "train.jsonl")):
    messages = json.loads(line)["messages"]
    prompt = tok.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template(messages, tokenize=False)
    ids = tok(full, add_special_tokens=False)["input_ids"]
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    labels = [-100] * n_prompt + ids[n_prompt:]
    examples.append((ids, labels))


def batch(i):
    rows = examples[4 * i: 4 * i + 4]
    longest = max(len(ids) for ids, _ in rows) - 1
    seq = (longest + 15) // 16 * 16
    x = [ids[:-1] + [0] * (seq - len(ids) + 1) for ids, _ in rows]
    y = [lab[1:] + [-100] * (seq - len(ids) + 1) for ids, lab in rows]
    return torch.tensor(x), torch.tensor(y), 4 * seq


times, tokens = [], []
model.train()
for i in range(steps + 2):
    x, y, n = batch(i)
    t0 = time.perf_counter()
    logits = model(x).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                             ignore_index=-100)
    loss.backward()
    opt.step()
    opt.zero_grad()
    if i >= 2:
        times.append(time.perf_counter() - t0)
        tokens.append(n)
ms = 1e3 * statistics.median(times)
print(f"peft: {ms:.1f} ms/step, {sum(tokens) / sum(times):.0f} tokens/s "
      f"({torch.get_num_threads()} threads, loss {loss.item():.4f})")
