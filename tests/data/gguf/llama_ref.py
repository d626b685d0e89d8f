"""Reference logits for Llama-layout GGUF files, computed as llama.cpp computes them: float64
numpy, the weights dequantized by the `gguf` package and used as stored (attn_q and attn_k in
ggml's layout, so the rotary embedding turns adjacent pairs (2i, 2i+1), llama.cpp's "normal"
mode), an implementation independent of wgtrain's (which undoes the converter's permutation and
rotates Hugging Face's halves).

    python llama_ref.py            # tiny-llama.json from tiny-llama.gguf (all logits)
    python llama_ref.py smollm2    # smollm2-logits.json from SmolLM2-135M-Instruct.Q4_1.gguf

Needs: pip install gguf numpy
"""
import json
import os
import sys

import numpy as np
import gguf

HERE = os.path.dirname(os.path.abspath(__file__))


def field(r, key):
    f = r.fields[key]
    v = f.parts[f.data[0]]
    return v.item() if v.size == 1 else v


def load(path):
    r = gguf.GGUFReader(path)
    arch = "llama"
    cfg = dict(
        n_layer=field(r, f"{arch}.block_count"),
        c=field(r, f"{arch}.embedding_length"),
        n_head=field(r, f"{arch}.attention.head_count"),
        n_kv=field(r, f"{arch}.attention.head_count_kv"),
        eps=float(field(r, f"{arch}.attention.layer_norm_rms_epsilon")),
        base=float(field(r, f"{arch}.rope.freq_base")),
    )
    w = {}
    for t in r.tensors:
        x = gguf.quants.dequantize(t.data, t.tensor_type)
        shape = [int(d) for d in reversed(t.shape)]  # ggml dims, fastest first
        w[t.name] = np.asarray(x, dtype=np.float64).reshape(shape)
    return cfg, w


def rms(x, g, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g


def rope_pairs(x, base):
    # x (T, H, D): pairs (2i, 2i+1) turn by t·base^(-2i/D)
    t, _, d = x.shape
    inv = base ** (-np.arange(0, d, 2) / d)
    ang = np.arange(t)[:, None] * inv[None, :]  # (T, D/2)
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = a * cos - b * sin
    out[..., 1::2] = a * sin + b * cos
    return out


def logits(cfg, w, tokens):
    c, nh, nkv = cfg["c"], cfg["n_head"], cfg["n_kv"]
    hs = c // nh
    x = w["token_embd.weight"][tokens]  # (T, C)
    t = len(tokens)
    mask = np.triu(np.full((t, t), -np.inf), 1)
    for i in range(cfg["n_layer"]):
        p = lambda n: w[f"blk.{i}.{n}.weight"]
        h = rms(x, p("attn_norm"), cfg["eps"])
        q = rope_pairs((h @ p("attn_q").T).reshape(t, nh, hs), cfg["base"])
        k = rope_pairs((h @ p("attn_k").T).reshape(t, nkv, hs), cfg["base"])
        v = (h @ p("attn_v").T).reshape(t, nkv, hs)
        y = np.empty((t, nh, hs))
        for head in range(nh):
            g = head // (nh // nkv)
            s = q[:, head] @ k[:, g].T / np.sqrt(hs) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            y[:, head] = (s / s.sum(-1, keepdims=True)) @ v[:, g]
        x = x + y.reshape(t, c) @ p("attn_output").T
        h = rms(x, p("ffn_norm"), cfg["eps"])
        gate = h @ p("ffn_gate").T
        x = x + (gate / (1 + np.exp(-gate)) * (h @ p("ffn_up").T)) @ p("ffn_down").T
    x = rms(x, w["output_norm.weight"], cfg["eps"])
    head = w.get("output.weight", w["token_embd.weight"])
    return x @ head.T  # (T, V)


def main():
    if sys.argv[1:] == ["smollm2"]:
        cfg, w = load(os.path.join(HERE, "SmolLM2-135M-Instruct.Q4_1.gguf"))
        # "<|im_start|>user\nWhat is the capital of France?<|im_end|>" as SmolLM2 tokenizes it
        tokens = [1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2]
        out = logits(cfg, w, tokens)
        ids = [0, 1, 2, 198, 260, 314, 1000, 4649, 20000, 49151]
        top = np.argsort(-out[-1])[:10]
        ref = {
            "tokens": tokens,
            "ids": ids,
            "logits": out[:, ids].tolist(),
            "last_top_ids": top.tolist(),
            "last_top_logits": out[-1, top].tolist(),
            "argmax": out.argmax(-1).tolist(),
        }
        path = os.path.join(HERE, "smollm2-logits.json")
    else:
        cfg, w = load(os.path.join(HERE, "tiny-llama.gguf"))
        tokens = [3, 17, 63, 0, 42, 42, 9, 21]
        ref = {"tokens": tokens, "logits": logits(cfg, w, tokens).tolist()}
        path = os.path.join(HERE, "tiny-llama.json")
    with open(path, "w") as f:
        json.dump(ref, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
