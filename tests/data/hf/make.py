"""Tiny Hugging Face model directories and their reference logits, for wgtrain's loader tests.

    python make.py      # writes tiny-llama/ and tiny-gpt2/, each with ref.json

tiny-llama: a LlamaForCausalLM layout (config.json, model.safetensors with F32 and F16 tensors,
untied lm_head, grouped-query attention), tokenizer.json and tokenizer_config.json (a chat
template). tiny-gpt2: a GPT2LMHeadModel layout (the `transformer.` prefix, Conv1D weights stored
(in, out), the attn.bias and attn.masked_bias buffers, no lm_head: tied) in two shards with
model.safetensors.index.json. ref.json: float64 numpy logits computed as transformers' modeling
code computes them (Llama: rotate-half RoPE on the stored q/k rows; GPT-2: gelu_new, LayerNorm
eps 1e-5), for the token ids it lists.

Needs: pip install numpy safetensors
"""
import json
import os
import shutil

import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(37)
TOKENIZER = os.path.join(HERE, "..", "gguf", "tiny-tokenizer.json")
V = 277  # the tiny tokenizer's 272 tokens and 5 added ones
TOKENS = [5, 100, 276, 0, 42, 42, 9, 272, 30]


def rms(x, g, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g


def layer_norm(x, g, b, eps=1e-5):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * g + b


def rotate_half(x, base):
    # x (T, H, D): Hugging Face's Llama rotary embedding (dims i and i + D/2 turn together)
    t, _, d = x.shape
    inv = base ** (-np.arange(0, d, 2) / d)
    ang = np.arange(t)[:, None] * inv[None, :]
    cos = np.concatenate([np.cos(ang)] * 2, -1)[:, None, :]
    sin = np.concatenate([np.sin(ang)] * 2, -1)[:, None, :]
    rot = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], -1)
    return x * cos + rot * sin


def causal(q, k, v, nh, nkv):
    t, _, hs = q.shape
    mask = np.triu(np.full((t, t), -np.inf), 1)
    y = np.empty_like(q)
    for h in range(nh):
        g = h // (nh // nkv)
        s = q[:, h] @ k[:, g].T / np.sqrt(hs) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        y[:, h] = (s / s.sum(-1, keepdims=True)) @ v[:, g]
    return y.reshape(t, nh * hs)


def tiny_llama():
    d = os.path.join(HERE, "tiny-llama")
    os.makedirs(d, exist_ok=True)
    c, f, nh, nkv, layers, eps, theta = 32, 48, 4, 2, 2, 1e-6, 500.0
    hs, kv = c // nh, nkv * c // nh
    w = {}

    def mat(name, rows, cols, dtype=np.float32):
        w[name] = rng.normal(0, 0.2, (rows, cols)).astype(dtype)

    mat("model.embed_tokens.weight", V, c)
    for i in range(layers):
        p = f"model.layers.{i}"
        w[f"{p}.input_layernorm.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        mat(f"{p}.self_attn.q_proj.weight", c, c, np.float16)
        mat(f"{p}.self_attn.k_proj.weight", kv, c)
        mat(f"{p}.self_attn.v_proj.weight", kv, c, np.float16)
        mat(f"{p}.self_attn.o_proj.weight", c, c)
        w[f"{p}.post_attention_layernorm.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        mat(f"{p}.mlp.gate_proj.weight", f, c)
        mat(f"{p}.mlp.up_proj.weight", f, c, np.float16)
        mat(f"{p}.mlp.down_proj.weight", c, f)
    w["model.norm.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    mat("lm_head.weight", V, c)
    save_file(w, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": c,
        "intermediate_size": f, "num_attention_heads": nh, "num_key_value_heads": nkv,
        "num_hidden_layers": layers, "rms_norm_eps": eps, "rope_theta": theta,
        "vocab_size": V, "max_position_embeddings": 64, "tie_word_embeddings": False,
        "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "rope_scaling": None,
        "bos_token_id": 273, "eos_token_id": 274, "torch_dtype": "float32",
    }
    json.dump(config, open(os.path.join(d, "config.json"), "w"), indent=1)
    shutil.copy(TOKENIZER, os.path.join(d, "tokenizer.json"))
    template = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
                "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    json.dump({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": template},
              open(os.path.join(d, "tokenizer_config.json"), "w"), indent=1)

    W = {k: v.astype(np.float64) for k, v in w.items()}

    def forward(tokens):
        x = W["model.embed_tokens.weight"][tokens]
        t = len(tokens)
        for i in range(layers):
            p = lambda n: W[f"model.layers.{i}.{n}.weight"]
            h = rms(x, p("input_layernorm"), eps)
            q = rotate_half((h @ p("self_attn.q_proj").T).reshape(t, nh, hs), theta)
            k = rotate_half((h @ p("self_attn.k_proj").T).reshape(t, nkv, hs), theta)
            v = (h @ p("self_attn.v_proj").T).reshape(t, nkv, hs)
            x = x + causal(q, k, v, nh, nkv) @ p("self_attn.o_proj").T
            h = rms(x, p("post_attention_layernorm"), eps)
            g = h @ p("mlp.gate_proj").T
            x = x + (g / (1 + np.exp(-g)) * (h @ p("mlp.up_proj").T)) @ p("mlp.down_proj").T
        return rms(x, W["model.norm.weight"], eps) @ W["lm_head.weight"].T

    write_ref(d, forward)


def write_ref(d, forward):
    """ref.json: the logits for TOKENS, and 12 tokens greedy decoding appends to them (each
    from a full forward of everything so far), with the margin of each choice."""
    logits = forward(TOKENS)
    seq, margins = list(TOKENS), []
    for _ in range(12):
        last = forward(seq)[-1]
        top = np.sort(last)[-2:]
        margins.append(float(top[1] - top[0]))
        seq.append(int(last.argmax()))
    json.dump({"tokens": TOKENS, "logits": logits.tolist(), "greedy": seq[len(TOKENS):],
               "greedy_margins": margins}, open(os.path.join(d, "ref.json"), "w"))


def tiny_gpt2():
    d = os.path.join(HERE, "tiny-gpt2")
    os.makedirs(d, exist_ok=True)
    c, nh, layers, ctx = 32, 4, 2, 32
    hs = c // nh
    w = {}
    n = lambda *s: rng.normal(0, 0.2, s).astype(np.float32)
    w["transformer.wte.weight"] = n(V, c)
    w["transformer.wpe.weight"] = n(ctx, c)
    for i in range(layers):
        p = f"transformer.h.{i}"
        w[f"{p}.ln_1.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        w[f"{p}.ln_1.bias"] = n(c)
        # Conv1D: weight (in, out)
        w[f"{p}.attn.c_attn.weight"] = n(c, 3 * c)
        w[f"{p}.attn.c_attn.bias"] = n(3 * c)
        w[f"{p}.attn.c_proj.weight"] = n(c, c)
        w[f"{p}.attn.c_proj.bias"] = n(c)
        w[f"{p}.ln_2.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        w[f"{p}.ln_2.bias"] = n(c)
        w[f"{p}.mlp.c_fc.weight"] = n(c, 4 * c)
        w[f"{p}.mlp.c_fc.bias"] = n(4 * c)
        w[f"{p}.mlp.c_proj.weight"] = n(4 * c, c)
        w[f"{p}.mlp.c_proj.bias"] = n(c)
        # buffers older checkpoints carry: the causal mask and its fill value
        w[f"{p}.attn.bias"] = np.tril(np.ones((ctx, ctx), np.float32))[None, None]
        w[f"{p}.attn.masked_bias"] = np.array(-1e4, np.float32)
    w["transformer.ln_f.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    w["transformer.ln_f.bias"] = n(c)
    names = sorted(w)
    shards = [names[: len(names) // 2], names[len(names) // 2:]]
    index = {"metadata": {"total_size": int(sum(v.nbytes for v in w.values()))}, "weight_map": {}}
    for j, part in enumerate(shards):
        file = f"model-{j + 1:05d}-of-00002.safetensors"
        save_file({k: w[k] for k in part}, os.path.join(d, file), metadata={"format": "pt"})
        index["weight_map"].update({k: file for k in part})
    json.dump(index, open(os.path.join(d, "model.safetensors.index.json"), "w"), indent=1)
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": c, "n_head": nh,
        "n_layer": layers, "n_positions": ctx, "vocab_size": V, "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new", "n_inner": None, "tie_word_embeddings": True,
        "bos_token_id": 272, "eos_token_id": 272,
    }
    json.dump(config, open(os.path.join(d, "config.json"), "w"), indent=1)
    shutil.copy(TOKENIZER, os.path.join(d, "tokenizer.json"))

    W = {k: v.astype(np.float64) for k, v in w.items()}
    gelu = lambda u: 0.5 * u * (1 + np.tanh(np.sqrt(2 / np.pi) * (u + 0.044715 * u ** 3)))

    def forward(tokens):
        t = len(tokens)
        x = W["transformer.wte.weight"][tokens] + W["transformer.wpe.weight"][:t]
        for i in range(layers):
            p = lambda s: W[f"transformer.h.{i}.{s}"]
            h = layer_norm(x, p("ln_1.weight"), p("ln_1.bias"))
            qkv = h @ p("attn.c_attn.weight") + p("attn.c_attn.bias")
            q, k, v = (qkv[:, j * c:(j + 1) * c].reshape(t, nh, hs) for j in range(3))
            x = x + causal(q, k, v, nh, nh) @ p("attn.c_proj.weight") + p("attn.c_proj.bias")
            h = layer_norm(x, p("ln_2.weight"), p("ln_2.bias"))
            m = gelu(h @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias"))
            x = x + m @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias")
        x = layer_norm(x, W["transformer.ln_f.weight"], W["transformer.ln_f.bias"])
        return x @ W["transformer.wte.weight"].T

    write_ref(d, forward)


if __name__ == "__main__":
    tiny_llama()
    tiny_gpt2()
    print("wrote tiny-llama/ and tiny-gpt2/")
