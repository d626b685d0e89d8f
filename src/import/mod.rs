//! Models made elsewhere, coming in: GGUF files (`gguf`, llama.cpp's format) and ggml's tensor
//! types (`ggml`). Reading and decoding only; nothing here touches a device.

pub mod ggml;
pub mod gguf;
pub mod llama;
pub mod tokenizer;
