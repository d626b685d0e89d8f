//! Models made elsewhere, coming in: GGUF files (`gguf`, llama.cpp's format; its tensor types
//! and their decoders are `quant::ggml` and `ops::ggml`), a Llama file's config and weights
//! (`llama`), Hugging Face directories (`hf`), tokenizers (`tokenizer`) and chat templates
//! (`chat`); [`Pretrained`] holds the three a user runs together, [`fill`] writes a file's
//! weights into a model built elsewhere (a fine-tune's base). Above `nn`, `ops`, `quant` and
//! `gpu`; below `train`.

pub mod chat;
pub mod gguf;
pub mod hf;
pub mod llama;
pub mod tokenizer;

use crate::error::Result;
use crate::nn::{Build, Gpt};
use std::path::{Path, PathBuf};

/// Whether `path` is a model from elsewhere: a GGUF file (by its magic) or a directory with a
/// config.json (a Hugging Face model).
pub fn is_model(path: &Path) -> bool {
    if path.is_dir() {
        return path.join("config.json").is_file();
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|_| &magic == gguf::MAGIC)
}

/// The model a GGUF file or Hugging Face directory holds, as a config (checked: an
/// architecture or setting wgtrain does not implement is an error naming it).
pub fn model_config(path: &Path) -> Result<crate::nn::GptConfig> {
    if path.is_dir() {
        hf::config(path, &hf::read_config(path)?)
    } else {
        llama::config(&gguf::Gguf::open(path)?)
    }
}

/// Writes a GGUF file's or Hugging Face directory's weights into the parameters of the same
/// names among `params` (a model of [`model_config`]'s config, its context perhaps shorter,
/// or a stage or shard of one), every tensor checked first; parameters it lacks (LoRA
/// adapters) are left. Returns the names filled.
pub fn fill(
    gpu: &crate::gpu::Gpu,
    path: &Path,
    params: &[&crate::nn::Param],
) -> Result<Vec<String>> {
    if path.is_dir() {
        // checked against the file's own config (its whole position table)
        hf::fill(gpu, path, &model_config(path)?, params)
    } else {
        llama::fill(gpu, path, params)
    }
}

/// What reads and writes a model's text: its tokenizer and chat template, and its name.
pub struct Vocab {
    pub tokenizer: tokenizer::Tokenizer,
    pub chat: chat::ChatTemplate,
    /// The file's own name for the model (GGUF's `general.name`, config.json's
    /// `_name_or_path`).
    pub name: Option<String>,
}

/// Gives every linear among `linears` that waits for its quantized weight
/// ([`crate::nn::linear::Weight::Pending`], a QLoRA base) its weight from a GGUF file or a
/// Hugging Face directory, kept quantized as `qlora` says. Returns the names given.
pub fn fill_quantized(
    gpu: &crate::gpu::Gpu,
    path: &Path,
    linears: Vec<&mut crate::nn::linear::Linear>,
    qlora: &crate::nn::lora::QloraConfig,
) -> Result<Vec<String>> {
    if path.is_dir() {
        hf::fill_quantized(gpu, path, &model_config(path)?, linears, qlora.method())
    } else {
        llama::fill_quantized(gpu, path, linears, qlora.method(), qlora.keep_file_blocks)
    }
}

/// A model from elsewhere with what reads and writes its text.
pub struct Pretrained {
    pub path: PathBuf,
    pub model: Gpt,
    pub vocab: Vocab,
}

impl Pretrained {
    /// A GGUF file, or a Hugging Face model directory: the model built by `b` (its
    /// precision), its tokenizer and chat template (ChatML where it has none).
    pub fn load(b: &Build, path: &Path) -> Result<Pretrained> {
        let vocab = Vocab::load(path)?;
        let model = match path.is_dir() {
            true => hf::load(b, path)?,
            false => llama::load(b, path)?,
        };
        Ok(Pretrained {
            path: path.into(),
            model,
            vocab,
        })
    }
}

impl Vocab {
    /// A GGUF file's or Hugging Face directory's tokenizer, chat template (ChatML where it has
    /// none) and name.
    pub fn load(path: &Path) -> Result<Vocab> {
        if path.is_dir() {
            return Self::load_hf(path);
        }
        let g = gguf::Gguf::open(path)?;
        let tokenizer = tokenizer::Tokenizer::from_gguf(&g)?;
        let text = |id: Option<u32>| id.and_then(|i| tokenizer.token_text(i)).unwrap_or_default();
        let source = g
            .get("tokenizer.chat_template")
            .and_then(|v| v.as_str())
            .unwrap_or(chat::CHATML);
        let chat = chat::ChatTemplate::new(source, &text(tokenizer.bos), &text(tokenizer.eos));
        Ok(Vocab {
            tokenizer,
            chat,
            name: g
                .get("general.name")
                .and_then(|v| v.as_str())
                .map(String::from),
        })
    }

    /// A Hugging Face directory's tokenizer.json, tokenizer_config.json's special tokens, and
    /// the chat template (chat_template.jinja or tokenizer_config.json's) where it has one.
    fn load_hf(dir: &Path) -> Result<Vocab> {
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
        Ok(Vocab {
            tokenizer,
            chat,
            name: config["_name_or_path"].as_str().map(String::from),
        })
    }

    /// Writes the tokenizer and its settings as a Hugging Face directory holds them:
    /// tokenizer.json, and tokenizer_config.json with the special tokens, whether BOS is
    /// added, and the chat template.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.tokenizer.save(&dir.join("tokenizer.json"))?;
        let text = |id: Option<u32>| id.and_then(|i| self.tokenizer.token_text(i));
        let config = serde_json::json!({
            "bos_token": text(self.tokenizer.bos),
            "eos_token": text(self.tokenizer.eos),
            "add_bos_token": self.tokenizer.add_bos,
            "chat_template": self.chat.source(),
            "tokenizer_class": "PreTrainedTokenizerFast",
        });
        let json = serde_json::to_string_pretty(&config).expect("JSON of a config");
        crate::files::write_atomically(&dir.join("tokenizer_config.json"), json.as_bytes())
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
