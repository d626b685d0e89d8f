//! `wgtrain quantize`: a checkpoint's linear weights in a post-training quantized format.

use anyhow::Result;
use std::path::PathBuf;
use std::time::Instant;
use wgtrain::quant::{self, file};
use wgtrain::train::checkpoint::Checkpoint;

#[derive(clap::Args)]
pub struct QuantizeArgs {
    /// The trained checkpoint.
    #[arg(long)]
    checkpoint: PathBuf,
    /// int8 (per output channel), int4 (Q4_0's group-wise absmax) or nf4 (bitsandbytes'
    /// NormalFloat with a per-block absmax).
    #[arg(long)]
    method: String,
    /// Group (int4, default 32) or block (nf4, default 64) length along a row.
    #[arg(long)]
    group: Option<usize>,
    /// Where to write the quantized model (.safetensors).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: QuantizeArgs) -> Result<()> {
    let method = quant::Method::parse(&args.method, args.group)?;
    let ckpt = Checkpoint::load(&args.checkpoint)?;
    let started = Instant::now();
    let reports = file::write(&ckpt, method, &args.out)?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{:<28} {:>12} {:>10} {:>11}",
        "weight", "shape", "bits/w", "rel. error"
    );
    let (mut before, mut after, mut weights) = (0, 0, 0);
    for r in &reports {
        let n = r.shape[0] * r.shape[1];
        println!(
            "{:<28} {:>12} {:>10.3} {:>11.3e}",
            r.name,
            format!("{}x{}", r.shape[0], r.shape[1]),
            8.0 * r.bytes_after as f64 / n as f64,
            r.error
        );
        before += r.bytes_before;
        after += r.bytes_after;
        weights += n;
    }
    println!(
        "{}{}: {} weights in {} matrices quantized (the embeddings and 1-D tensors stay f32), \
         {:.3} bits per weight, {before} → {after} bytes; {} written in {secs:.2} s",
        method.name(),
        match method {
            quant::Method::Int8 => String::new(),
            m => format!(" (group {})", m.group(0)),
        },
        weights,
        reports.len(),
        8.0 * after as f64 / weights.max(1) as f64,
        args.out.display()
    );
    Ok(())
}
