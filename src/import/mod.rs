//! Models made elsewhere, coming in: GGUF files (`gguf`, llama.cpp's format), ggml's tensor
//! types and their host decoders (`ggml`), their decoders on the device (`decode`), a Llama
//! file's config and weights (`llama`), tokenizers (`tokenizer`) and chat templates (`chat`);
//! [`Pretrained`] holds the three a user runs together. Above `nn`, `ops` and `gpu`.

pub mod chat;
pub mod decode;
pub mod ggml;
pub mod gguf;
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
    /// A GGUF file: the model built by `b` (its precision), its tokenizer and chat template
    /// (ChatML where it has none).
    pub fn load(b: &Build, path: &Path) -> Result<Pretrained> {
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
