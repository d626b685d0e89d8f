//! Models made elsewhere, coming in: GGUF files (`gguf`, llama.cpp's format), ggml's tensor
//! types and their host decoders (`ggml`), their decoders on the device (`decode`), a Llama
//! file's config and weights (`llama`), tokenizers (`tokenizer`) and chat templates (`chat`);
//! [`Pretrained`] holds the three a user runs together. Above `nn`, `ops` and `gpu`.

pub mod chat;
pub mod decode;
pub mod ggml;
pub mod gguf;
pub mod hf;
pub mod llama;
pub mod tokenizer;

use crate::error::Result;
use crate::nn::{Build, Gpt};
use std::path::{Path, PathBuf};

/// A model from elsewhere with what reads and writes its text.
pub struct Pretrained {
    pub path: PathBuf,
    pub model: Gpt,
    pub tokenizer: tokenizer::Tokenizer,
    pub chat: chat::ChatTemplate,
    /// The file's own name for the model (GGUF's `general.name`).
    pub name: Option<String>,
}

impl Pretrained {
    /// A GGUF file, or a Hugging Face model directory: the model built by `b` (its
    /// precision), its tokenizer and chat template (ChatML where it has none).
    pub fn load(b: &Build, path: &Path) -> Result<Pretrained> {
        if path.is_dir() {
            return Self::load_hf(b, path);
        }
        let g = gguf::Gguf::open(path)?;
        let tokenizer = tokenizer::Tokenizer::from_gguf(&g)?;
        let text = |id: Option<u32>| id.and_then(|i| tokenizer.token_text(i)).unwrap_or_default();
        let source = g
            .get("tokenizer.chat_template")
            .and_then(|v| v.as_str())
            .unwrap_or(chat::CHATML);
        let chat = chat::ChatTemplate::new(source, &text(tokenizer.bos), &text(tokenizer.eos));
        let model = llama::load(b, path)?;
        Ok(Pretrained {
            path: path.into(),
            model,
            tokenizer,
            chat,
            name: g
                .get("general.name")
                .and_then(|v| v.as_str())
                .map(String::from),
        })
    }

    /// A Hugging Face directory: config.json and its weights ([`hf::load`]), tokenizer.json,
    /// tokenizer_config.json's special tokens, and the chat template (chat_template.jinja or
    /// tokenizer_config.json's) where it has one.
    fn load_hf(b: &Build, dir: &Path) -> Result<Pretrained> {
        let config = hf::read_config(dir)?;
        let mut tokenizer = tokenizer::Tokenizer::from_file(&dir.join("tokenizer.json"))?;
        let tc_path = dir.join("tokenizer_config.json");
        let tc: serde_json::Value = match tc_path.exists() {
            true => {
                let text = crate::files::read_text_capped(
                    &tc_path,
                    crate::files::CONFIG_CAP,
                    "tokenizer config",
                )?;
                serde_json::from_str(&text).map_err(|e| crate::error::Error::Format {
                    path: tc_path.clone(),
                    reason: format!("is not JSON: {e}"),
                })?
            }
            false => serde_json::Value::Null,
        };
        // a special token: tokenizer_config's text ("<s>" or {"content": "<s>"}), else
        // config.json's id (a number, or the first of a list)
        let special = |key: &str| -> Option<u32> {
            let text = match &tc[key] {
                serde_json::Value::String(s) => Some(s.as_str()),
                v => v["content"].as_str(),
            };
            let id = &config[format!("{key}_id")];
            text.and_then(|t| tokenizer.token_id(t))
                .or_else(|| id.as_u64().or_else(|| id[0].as_u64()).map(|v| v as u32))
        };
        let (bos, eos) = (special("bos_token"), special("eos_token"));
        (tokenizer.bos, tokenizer.eos) = (bos, eos);
        tokenizer.add_bos = tc["add_bos_token"].as_bool().unwrap_or(false);
        let text = |id: Option<u32>| id.and_then(|i| tokenizer.token_text(i)).unwrap_or_default();
        // chat_template.jinja (newer transformers save it there), else tokenizer_config's: a
        // template, or a list of named ones (the "default" or the first)
        let jinja = dir.join("chat_template.jinja");
        let source = match &tc["chat_template"] {
            _ if jinja.exists() => {
                crate::files::read_text_capped(&jinja, crate::files::CONFIG_CAP, "chat template")?
            }
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(list) => list
                .iter()
                .find(|t| t["name"] == "default")
                .or(list.first())
                .and_then(|t| t["template"].as_str())
                .unwrap_or(chat::CHATML)
                .to_string(),
            _ => chat::CHATML.to_string(),
        };
        let chat = chat::ChatTemplate::new(&source, &text(tokenizer.bos), &text(tokenizer.eos));
        let model = hf::load(b, dir)?;
        Ok(Pretrained {
            path: dir.into(),
            model,
            tokenizer,
            chat,
            name: config["_name_or_path"].as_str().map(String::from),
        })
    }

    /// `text`'s ids as the model reads them: BOS first where the tokenizer adds it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = vec![];
        if let (true, Some(bos)) = (self.tokenizer.add_bos, self.tokenizer.bos) {
            ids.push(bos);
        }
        ids.extend(self.tokenizer.encode(text)?);
        Ok(ids)
    }

    /// The tokens that end a reply: EOS, and the chat template's end of turn where it is a
    /// token of its own.
    pub fn stop_tokens(&self) -> Vec<u32> {
        let mut stop: Vec<u32> = self.tokenizer.eos.into_iter().collect();
        for end in ["<|im_end|>", "<|eot_id|>", "<|end|>"] {
            if let Some(id) = self.tokenizer.token_id(end) {
                if !stop.contains(&id) {
                    stop.push(id);
                }
            }
        }
        stop
    }
}
