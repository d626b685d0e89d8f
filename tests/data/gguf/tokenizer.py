"""Reference token ids from `transformers`' own GGUF tokenizer conversion (its
integrations/gguf/gguf_tokenizer_mapping, the code `AutoTokenizer.from_pretrained(...,
gguf_file=...)` runs): writes tiny-tokenizer.gguf (a small byte-level BPE: the 256 byte tokens,
a few merges, control and user-defined tokens), tiny-tokenizer.json (the converted tokenizer as
Hugging Face saves it) and tokens.json (a corpus and the ids of each
text under tiny-tokenizer.gguf and, when SmolLM2-135M-Instruct.Q4_1.gguf is beside this script,
under SmolLM2), for tests/train/gguf.rs.

    venv/bin/pip install gguf numpy transformers tokenizers && venv/bin/python tokenizer.py
"""

import importlib
import json
import os

import gguf

HERE = os.path.dirname(os.path.abspath(__file__))
SMOL = os.path.join(HERE, "SmolLM2-135M-Instruct.Q4_1.gguf")
mapping = importlib.import_module("transformers.integrations.gguf.gguf_tokenizer_mapping")

CORPUS = [
    "Hello world!",
    "the theater in a pinch: either way, the end.",
    "price 12345 and 3.14, or 1,000,000",
    "  leading  spaces\tand\ttabs\n\nnewlines \n",
    "héllo naïve café, Straße, Ωμέγα",
    "emoji 😀👍🏽 and CJK 漢字かな한글",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "def f(x):\n    return x ** 2  # square\n",
    "<think>user-defined tokens stay whole</think>",
    "don't won't I'm you're they've we'll he'd",
    "",
]


def tiny():
    path = os.path.join(HERE, "tiny-tokenizer.gguf")
    spelling = mapping.bytes_to_unicode()
    byte_tokens = [spelling[b] for b in range(256)]
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "t h", "Ġ w", "o r", "Ġw or", "l d"]
    merged = [m.replace(" ", "") for m in merges]
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = special + byte_tokens + merged + ["<think>", "</think>"]
    types = [3] * len(special) + [1] * (len(byte_tokens) + len(merged)) + [4, 4]
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def converted(path):
    """The `transformers` tokenizer the GGUF file at `path` converts to."""
    r = gguf.GGUFReader(path)
    field = lambda k: r.fields[k].contents() if k in r.fields else None
    d = {
        "tokenizer_type": field("tokenizer.ggml.model"),
        "pre_tokenizer_type": field("tokenizer.ggml.pre"),
        "tokens": field("tokenizer.ggml.tokens"),
        "token_type": field("tokenizer.ggml.token_type"),
        "merges": field("tokenizer.ggml.merges"),
    }
    t = mapping.select_tokenizer_builder("llama", d["tokenizer_type"])(d)
    t = mapping.add_gguf_special_tokens(t, d)
    return mapping.set_split_regex(t, d)


def ids(path):
    t = converted(path)
    return [t(text, add_special_tokens=False).input_ids for text in CORPUS]


def main():
    path = tiny()
    out = {"corpus": CORPUS, "tiny": ids(path)}
    # the same tokenizer as Hugging Face saves it, for the tokenizer.json reader
    converted(path).backend_tokenizer.save(os.path.join(HERE, "tiny-tokenizer.json"))
    if os.path.exists(SMOL):
        out["smollm2"] = ids(SMOL)
    with open(os.path.join(HERE, "tokens.json"), "w") as f:
        json.dump(out, f)
    print("wrote tiny-tokenizer.gguf and tokens.json", "(with SmolLM2)" if "smollm2" in out else "")


if __name__ == "__main__":
    main()
