//! Tokenizers of models made elsewhere: a Hugging Face `tokenizer.json`, or a GGUF file's
//! byte-level BPE (`tokenizer.ggml.*`), both run by Hugging Face's own `tokenizers` crate (its
//! pure-Rust build: no C regex library, no downloads). For a GGUF file the crate's JSON is built
//! the way `transformers` converts one (`integrations/gguf`): the vocabulary respelled in the
//! byte alphabet where a token is not already, the file's merges, GPT-2's byte-level
//! pre-tokenizer unless the pre-tokenizer's name has a split of its own (Llama 3's), control
//! tokens added as special and user-defined ones as plain added tokens; so its ids equal
//! `transformers`' for the same file (tested on SmolLM2 when the file is present).

use super::gguf::Gguf;
use crate::error::{Error, Result};
use serde_json::{json, Value as Json};
use std::path::Path;

/// A token's byte range in the text it came from: (start, end).
pub type Span = (usize, usize);

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Whether a text's ids start with `bos` (GGUF's `tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
}

/// Llama 3's split (and the pre-tokenizers `transformers` maps to it), before the byte-level step.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_NAMES: [&str; 6] = [
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "dbrx",
    "smaug-bpe",
];

/// GGUF token types (llama.cpp's): a control token is special, a user-defined one is matched
/// whole but is not special.
const CONTROL: u64 = 3;
const USER_DEFINED: u64 = 4;

impl Tokenizer {
    /// A Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| Error::Format {
            path: path.into(),
            reason: format!("is not a tokenizer the tokenizers crate reads: {e}"),
        })?;
        Ok(Tokenizer {
            inner,
            bos: None,
            eos: None,
            add_bos: false,
        })
    }

    /// The byte-level BPE tokenizer a GGUF file's metadata holds.
    pub fn from_gguf(g: &Gguf) -> Result<Tokenizer> {
        let bad = |reason: String| Error::Format {
            path: g.path.clone(),
            reason,
        };
        let model = g.require_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(bad(format!(
                "its tokenizer is {model:?}; wgtrain reads byte-level BPE (\"gpt2\") tokenizers"
            )));
        }
        let strings = |key: &str| -> Result<Vec<&str>> {
            let v = g.require(key)?;
            v.as_array()
                .and_then(|a| a.iter().map(|s| s.as_str()).collect::<Option<Vec<_>>>())
                .ok_or_else(|| bad(format!("metadata {key:?} is not an array of strings")))
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types: Vec<u64> = match g.get("tokenizer.ggml.token_type") {
            None => vec![],
            Some(v) => v
                .as_array()
                .and_then(|a| a.iter().map(|t| t.as_u64()).collect::<Option<Vec<_>>>())
                .ok_or_else(|| {
                    bad("tokenizer.ggml.token_type is not an array of integers".into())
                })?,
        };
        if !types.is_empty() && types.len() != tokens.len() {
            return Err(bad(format!(
                "has {} tokens but {} token types",
                tokens.len(),
                types.len()
            )));
        }
        let spelling = byte_spelling();
        let in_alphabet = |t: &str| t.chars().all(|c| spelling.contains(&c));
        // a token not already in the byte alphabet is respelled byte by byte
        let spelled: Vec<String> = tokens
            .iter()
            .map(|t| match in_alphabet(t) {
                true => t.to_string(),
                false => t.bytes().map(|b| spelling[b as usize]).collect(),
            })
            .collect();
        let vocab: serde_json::Map<String, Json> = spelled
            .iter()
            .enumerate()
            .map(|(id, t)| (t.clone(), json!(id)))
            .collect();
        let mut added = vec![];
        for (id, (t, &ty)) in tokens.iter().zip(&types).enumerate() {
            let special = match ty {
                // a control token outside the byte alphabet is a mislabel (transformers skips it)
                CONTROL if in_alphabet(t) => true,
                USER_DEFINED if in_alphabet(t) => false,
                _ => continue,
            };
            added.push(json!({
                "id": id, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": special,
            }));
        }
        let byte_level = |use_regex: bool| {
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                   "use_regex": use_regex})
        };
        let pre = g.get("tokenizer.ggml.pre").and_then(|p| p.as_str());
        let pre_tokenizer = match pre {
            Some(p) if LLAMA3_NAMES.contains(&p) => json!({
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT},
                     "behavior": "Isolated", "invert": false},
                    byte_level(false),
                ],
            }),
            _ => byte_level(true),
        };
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": null,
            "decoder": byte_level(true),
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges,
            },
        });
        let inner: tokenizers::Tokenizer = spec
            .to_string()
            .parse()
            .map_err(|e| bad(format!("its tokenizer does not build: {e}")))?;
        let id = |key: &str| g.get(key).and_then(|v| v.as_u64()).map(|v| v as u32);
        let flag = |key: &str| matches!(g.get(key), Some(super::gguf::Value::Bool(true)));
        Ok(Tokenizer {
            inner,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
            add_bos: flag("tokenizer.ggml.add_bos_token"),
        })
    }

    /// The ids of `text`; special tokens written in it (`<|im_start|>`) are matched whole.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let e = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Data(format!("cannot tokenize the text: {e}")))?;
        Ok(e.get_ids().to_vec())
    }

    /// [`Tokenizer::encode`] with each token's byte span in `text`.
    pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Vec<Span>)> {
        let e = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Data(format!("cannot tokenize the text: {e}")))?;
        Ok((e.get_ids().to_vec(), e.get_offsets().to_vec()))
    }

    /// The text of `ids` (special tokens written out unless `skip_special`).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| Error::Data(format!("cannot decode ids: {e}")))
    }

    /// A token's text as the vocabulary spells it (special tokens included): "<|im_end|>".
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner
            .id_to_token(id)
            .filter(|_| self.is_added(id))
            .or_else(|| {
                self.inner
                    .decode(&[id], false)
                    .ok()
                    .filter(|t| !t.is_empty())
            })
    }

    fn is_added(&self, id: u32) -> bool {
        self.inner.get_added_tokens_decoder().contains_key(&id)
    }

    /// The id of a token spelled `text` in the vocabulary.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }

    /// Writes it as a Hugging Face `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self.inner.to_string(true).map_err(|e| Error::Format {
            path: path.into(),
            reason: format!("cannot be serialized: {e}"),
        })?;
        crate::files::write_atomically(path, json.as_bytes())
    }

    /// Tokens, added ones included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// GPT-2's byte alphabet: each byte's printable stand-in (printable ASCII and Latin-1 bytes
/// themselves, the others shifted past 255 in order).
fn byte_spelling() -> Vec<char> {
    let printable = |b: u32| {
        (b'!' as u32..=b'~' as u32).contains(&b)
            || (0xA1..=0xAC).contains(&b)
            || (0xAE..=0xFF).contains(&b)
    };
    let mut next = 256;
    (0..256u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap()
            } else {
                next += 1;
                char::from_u32(next - 1).unwrap()
            }
        })
        .collect()
}
