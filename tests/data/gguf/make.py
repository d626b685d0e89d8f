"""Writes tiny.gguf and tiny.json beside this script: a GGUF v3 file with metadata of every value
type and a tensor of every ggml type wgtrain decodes (random blocks, scales drawn as f16), and
the `gguf` package's own reading of it (metadata, tensor directory, and each tensor dequantized
by `gguf.quants.dequantize`, as f32 bit patterns) for tests/train/gguf.rs to compare against.

    python3 -m venv venv && venv/bin/pip install gguf numpy && venv/bin/python make.py
"""

import json
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(1234)


def f16_bytes(n, scale):
    return (rng.normal(0.0, scale, n).astype(np.float16)).view(np.uint8)


def blocks(kind, n_blocks):
    """n_blocks random blocks of `kind`: codes uniform, every f16 field a finite draw."""
    if kind == T.Q8_0:
        parts = lambda: [f16_bytes(1, 0.05), rng.integers(0, 256, 32, dtype=np.uint8)]
    elif kind == T.Q4_0:
        parts = lambda: [f16_bytes(1, 0.05), rng.integers(0, 256, 16, dtype=np.uint8)]
    elif kind == T.Q4_1:
        parts = lambda: [f16_bytes(2, 0.05), rng.integers(0, 256, 16, dtype=np.uint8)]
    elif kind == T.Q4_K:
        parts = lambda: [f16_bytes(2, 0.01), rng.integers(0, 256, 12 + 128, dtype=np.uint8)]
    elif kind == T.Q5_K:
        parts = lambda: [f16_bytes(2, 0.01), rng.integers(0, 256, 12 + 32 + 128, dtype=np.uint8)]
    elif kind == T.Q6_K:
        parts = lambda: [rng.integers(0, 256, 128 + 64 + 16, dtype=np.uint8), f16_bytes(1, 0.01)]
    else:
        raise ValueError(kind)
    return np.concatenate([np.concatenate(parts()) for _ in range(n_blocks)])


def main():
    path = os.path.join(HERE, "tiny.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 0.1)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo wörld")
    w.add_uint64("test.u64", 2**60 + 1)
    w.add_int64("test.i64", -(2**60) - 1)
    w.add_float64("test.f64", 1e-300)
    w.add_array("test.strings", ["a", "", "Ġthe", "<|im_start|>"])
    w.add_array("test.ints", [1, -2, 3])
    w.add_block_count(2)
    w.add_context_length(64)
    w.add_embedding_length(32)

    tensors = {}
    # (rows, cols): cols a whole number of blocks
    for name, kind, rows, cols in [
        ("f32", T.F32, 3, 5),
        ("f16", T.F16, 2, 7),
        ("bf16", T.BF16, 2, 6),
        ("q8_0", T.Q8_0, 3, 64),
        ("q4_0", T.Q4_0, 2, 64),
        ("q4_1", T.Q4_1, 2, 32),
        ("q4_k", T.Q4_K, 2, 256),
        ("q5_k", T.Q5_K, 1, 512),
        ("q6_k", T.Q6_K, 2, 256),
    ]:
        if kind == T.F32:
            raw = rng.normal(0, 1, (rows, cols)).astype(np.float32)
        elif kind == T.F16:
            raw = rng.normal(0, 1, (rows, cols)).astype(np.float16)
        elif kind == T.BF16:
            raw = (rng.normal(0, 1, rows * cols).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(rows, cols * 2)
        else:
            block, size = gguf.GGML_QUANT_SIZES[kind]
            raw = blocks(kind, rows * cols // block).reshape(rows, cols // block * size)
        w.add_tensor(name, raw, raw_dtype=kind)
        if kind in (T.F32, T.F16):
            values = raw.astype(np.float32)
        else:
            values = dequantize(raw, kind)
        tensors[name] = {
            "type": int(kind),
            "shape": [rows, cols],
            "bits": [int(b) for b in np.asarray(values, dtype=np.float32).reshape(-1).view(np.uint32)],
        }
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # the file as the package reads it back
    r = gguf.GGUFReader(path)
    out = {"tensors": tensors, "directory": []}
    for t in r.tensors:
        out["directory"].append(
            {
                "name": t.name,
                "dims": [int(d) for d in t.shape],
                "type": int(t.tensor_type),
                "start": int(t.data_offset),
                "bytes": int(t.n_bytes),
            }
        )
    with open(os.path.join(HERE, "tiny.json"), "w") as f:
        json.dump(out, f)
    print(f"wrote {path} ({os.path.getsize(path)} bytes) and tiny.json")
    tiny_llama()
    tiny_gpt2()


def tiny_gpt2():
    """tiny-gpt2.gguf: ../hf/tiny-gpt2's weights in llama.cpp's gpt2 layout (F32; Conv1D
    weights transposed to (out, in); the tied head written again as output.weight, as
    llama.cpp's converter writes it), so its logits are that directory's ref.json's."""
    from safetensors.numpy import load_file
    src = os.path.join(HERE, "..", "hf", "tiny-gpt2")
    wt = {}
    for f in sorted(os.listdir(src)):
        if f.endswith(".safetensors"):
            wt.update(load_file(os.path.join(src, f)))
    cfg = json.load(open(os.path.join(src, "config.json")))
    c = cfg["n_embd"]
    path = os.path.join(HERE, "tiny-gpt2.gguf")
    w = gguf.GGUFWriter(path, "gpt2")
    w.add_block_count(cfg["n_layer"])
    w.add_context_length(cfg["n_positions"])
    w.add_embedding_length(c)
    w.add_feed_forward_length(4 * c)
    w.add_head_count(cfg["n_head"])
    w.add_layer_norm_eps(1e-5)
    # its tokenizer.json as GGUF's tokenizer.ggml.* (byte-level BPE; added tokens as control
    # tokens), so the file is a whole model a fine-tune can start from
    tok = json.load(open(os.path.join(src, "tokenizer.json")))
    vocab = dict(tok["model"]["vocab"])
    added = {a["content"]: a["id"] for a in tok["added_tokens"]}
    vocab.update(added)
    tokens = [None] * len(vocab)
    for text, i in vocab.items():
        tokens[i] = text
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in added else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_eos_token_id(added["<|endoftext|>"])
    w.add_bos_token_id(added["<|endoftext|>"])
    t = lambda n: wt[f"transformer.{n}"]
    w.add_tensor("token_embd.weight", t("wte.weight"))
    w.add_tensor("position_embd.weight", t("wpe.weight"))
    for i in range(cfg["n_layer"]):
        for ours, theirs, conv in [
            ("attn_norm", "ln_1", False), ("attn_qkv", "attn.c_attn", True),
            ("attn_output", "attn.c_proj", True), ("ffn_norm", "ln_2", False),
            ("ffn_up", "mlp.c_fc", True), ("ffn_down", "mlp.c_proj", True),
        ]:
            weight = t(f"h.{i}.{theirs}.weight")
            w.add_tensor(f"blk.{i}.{ours}.weight", np.ascontiguousarray(weight.T) if conv else weight)
            w.add_tensor(f"blk.{i}.{ours}.bias", t(f"h.{i}.{theirs}.bias"))
    w.add_tensor("output_norm.weight", t("ln_f.weight"))
    w.add_tensor("output_norm.bias", t("ln_f.bias"))
    w.add_tensor("output.weight", t("wte.weight"))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def tiny_llama():
    """tiny-llama.gguf: a whole Llama-layout model (2 blocks, d 32, 4 heads over 2 key/value
    heads, SwiGLU 64, vocabulary 64, tied head), its tensors in several types, for the config
    mapping and the tensor check."""
    path = os.path.join(HERE, "tiny-llama.gguf")
    w = gguf.GGUFWriter(path, "llama")
    c, f, v, heads, kv_heads = 32, 64, 64, 4, 2
    w.add_block_count(2)
    w.add_context_length(128)
    w.add_embedding_length(c)
    w.add_feed_forward_length(f)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_vocab_size(v)
    kv = kv_heads * c // heads

    def add(name, rows, cols, kind):
        # a norm's gain is one row: stored 1-D, as llama.cpp's converter stores it
        x = rng.normal(0, 0.1, (rows, cols) if rows > 1 else cols).astype(np.float32)
        if kind == T.F32:
            w.add_tensor(name, x)
        elif kind == T.F16:
            w.add_tensor(name, x.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(x, kind), raw_dtype=kind)

    add("token_embd.weight", v, c, T.Q8_0)
    for i in range(2):
        add(f"blk.{i}.attn_norm.weight", 1, c, T.F32)
        add(f"blk.{i}.attn_q.weight", c, c, T.Q4_1)
        add(f"blk.{i}.attn_k.weight", kv, c, T.Q4_1)
        add(f"blk.{i}.attn_v.weight", kv, c, T.Q8_0)
        add(f"blk.{i}.attn_output.weight", c, c, T.Q4_0)
        add(f"blk.{i}.ffn_norm.weight", 1, c, T.F32)
        add(f"blk.{i}.ffn_gate.weight", f, c, T.F16)
        add(f"blk.{i}.ffn_up.weight", f, c, T.BF16)
        add(f"blk.{i}.ffn_down.weight", c, f, T.Q8_0)
    add("output_norm.weight", 1, c, T.F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
