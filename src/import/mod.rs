//! Models made elsewhere, coming in: GGUF files (`gguf`, llama.cpp's format), ggml's tensor
//! types and their host decoders (`ggml`), their decoders on the device (`decode`), a Llama
//! file's config (`llama`) and tokenizers (`tokenizer`). Above `ops` and `gpu`, which `decode`
//! uses; everything else here runs on the host.

pub mod decode;
pub mod ggml;
pub mod gguf;
pub mod llama;
pub mod tokenizer;
