//! Any file as bytes (vocabulary 256; a `.gz` file decompressed): the first 90 % trains, the last 10 % validates; batches are
//! random windows of block_size + 1 bytes.

use crate::error::{Error, Result};
use crate::rng::Rng;
use std::path::Path;

/// The largest text wgtrain reads: half the memory the host has available (it is held in
/// memory, beside the run), or 16 GiB where that is unknown.
pub fn text_cap() -> u64 {
    crate::gpu::capacity::available_host_memory().map_or(16 << 30, |m| m / 2)
}

pub struct Text {
    pub train: Vec<u8>,
    pub val: Vec<u8>,
}

impl Text {
    /// Reads a text file: a regular file, at most [`text_cap`] bytes; a `.gz` file is
    /// decompressed (its text at most that).
    pub fn load(path: &Path) -> Result<Text> {
        let bytes = crate::files::read_capped_gz(path, text_cap(), "text to train on")?;
        Self::from_bytes(bytes).map_err(|e| Error::Data(format!("{}: {e}", path.display())))
    }

    /// Splits in place: the text is held once (plus its last 10 %).
    pub fn from_bytes(mut bytes: Vec<u8>) -> std::result::Result<Text, String> {
        if bytes.is_empty() {
            return Err("the file is empty".into());
        }
        let split = bytes.len() * 9 / 10;
        let val = bytes.split_off(split);
        Ok(Text { train: bytes, val })
    }

    /// Checks that windows of block_size + 1 fit in the training text and in the validation
    /// split (evaluation never falls back to training text).
    pub fn check_block_size(&self, block_size: usize) -> Result<()> {
        if self.val.len() < block_size + 1 {
            return Err(Error::Data(format!(
                "the text's validation split (its last 10 %) has {} bytes, fewer than \
                 block_size + 1 = {}; use a longer text (at least {} bytes) or a smaller \
                 block_size",
                self.val.len(),
                block_size + 1,
                10 * (block_size + 1)
            )));
        }
        if self.train.len() < block_size + 1 {
            return Err(Error::Data(format!(
                "the text's training part has {} bytes, fewer than block_size + 1 = {}; use a \
                 smaller block_size or a longer text",
                self.train.len(),
                block_size + 1
            )));
        }
        Ok(())
    }

    /// (inputs, targets), each (B, T): random windows of `source`.
    pub fn batch(source: &[u8], batch: usize, t: usize, rng: &mut Rng) -> (Vec<u32>, Vec<u32>) {
        assert!(
            source.len() > t,
            "a window of {} bytes in a text of {}",
            t + 1,
            source.len()
        );
        let (mut x, mut y) = (Vec::with_capacity(batch * t), Vec::with_capacity(batch * t));
        for _ in 0..batch {
            let start = rng.below((source.len() - t) as u64) as usize;
            x.extend(source[start..start + t].iter().map(|&b| b as u32));
            y.extend(source[start + 1..start + t + 1].iter().map(|&b| b as u32));
        }
        (x, y)
    }
}
