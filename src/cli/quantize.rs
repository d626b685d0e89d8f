//! `wgtrain quantize`: a checkpoint's linear weights in a post-training quantized format.

use anyhow::{bail, Result};
use std::path::PathBuf;
use std::time::Instant;
use wgtrain::quant::kashin::{self, Basis};
use wgtrain::quant::{self, file, Scheme};
use wgtrain::train::checkpoint::Checkpoint;
use wgtrain::Gpu;

#[derive(clap::Args)]
pub struct QuantizeArgs {
    /// The trained checkpoint.
    #[arg(long)]
    checkpoint: PathBuf,
    /// int8 (per output channel), int4, int3, int2 (Q4_0's group-wise absmax at 4, 3, 2 bits),
    /// nf4 (bitsandbytes' NormalFloat with a per-block absmax) or kashin (two well-clustered
    /// factors, 2-D k-means).
    #[arg(long)]
    method: String,
    /// Group (int4, int3, int2: default 32) or block (nf4, default 64) length along a row.
    #[arg(long)]
    group: Option<usize>,
    /// kashin: bits per weight's code, 2 to 8 (default 4).
    #[arg(long)]
    bits: Option<u32>,
    /// kashin: the orthogonal pair, dct (default) or random (Haar, regenerated from --seed).
    #[arg(long)]
    basis: Option<String>,
    /// kashin: the seed of the random basis and of the k-means seeding (default 0).
    #[arg(long)]
    seed: Option<u64>,
    /// kashin: the decomposition's relative tolerance (default 1e-5).
    #[arg(long)]
    tol: Option<f64>,
    /// kashin: the decomposition's iteration limit; a layer that has not converged by then
    /// stays f32 (default 1000).
    #[arg(long)]
    max_iter: Option<usize>,
    /// Where to write the quantized model (.safetensors): never the checkpoint itself.
    #[arg(long)]
    out: PathBuf,
    /// Replace a model file already at --out.
    #[arg(long)]
    overwrite: bool,
}

impl QuantizeArgs {
    fn scheme(&self) -> Result<Scheme> {
        let kashin_only = [
            ("--bits", self.bits.is_some()),
            ("--basis", self.basis.is_some()),
            ("--seed", self.seed.is_some()),
            ("--tol", self.tol.is_some()),
            ("--max-iter", self.max_iter.is_some()),
        ];
        if self.method != "kashin" {
            if let Some((flag, _)) = kashin_only.iter().find(|(_, given)| *given) {
                bail!(
                    "{flag} is a kashin option; {} has fixed bits (int8 8, int4 4, int3 3, int2 2, nf4 4)",
                    self.method
                );
            }
            return Ok(Scheme::Grouped(quant::Method::parse(
                &self.method,
                self.group,
            )?));
        }
        if self.group.is_some() {
            bail!("kashin codes the whole matrix with one codebook: it takes no --group");
        }
        let d = kashin::Options::default();
        let seed = self.seed.unwrap_or(d.seed);
        let o = kashin::Options {
            bits: self.bits.unwrap_or(d.bits),
            basis: Basis::parse(self.basis.as_deref().unwrap_or("dct"), seed)?,
            tol: self.tol.unwrap_or(d.tol),
            max_iter: self.max_iter.unwrap_or(d.max_iter),
            seed,
            ..d
        };
        o.validate()?;
        Ok(Scheme::Kashin(o))
    }
}

pub fn run(adapter: Option<&str>, args: QuantizeArgs) -> Result<()> {
    let scheme = args.scheme()?;
    let ckpt = Checkpoint::load(&args.checkpoint)?;
    let inputs: Vec<&std::path::Path> = std::iter::once(args.checkpoint.as_path())
        .chain(ckpt.parts.iter().map(|p| p.as_path()))
        .collect();
    wgtrain::files::claim_output(&args.out, &inputs, args.overwrite, "the quantized model")?;
    let gpu = Gpu::new(adapter)?;
    let started = Instant::now();
    let reports = file::write(&ckpt, &scheme, &args.out, &gpu)?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{:<28} {:>12} {:>10} {:>11}",
        "weight", "shape", "bits/w", "rel. error"
    );
    let (mut before, mut after, mut weights, mut kept) = (0, 0, 0, 0);
    for r in &reports {
        let n = r.shape[0] * r.shape[1];
        println!(
            "{:<28} {:>12} {:>10.3} {:>11.3e}  {}",
            r.name,
            format!("{}x{}", r.shape[0], r.shape[1]),
            8.0 * r.bytes_after as f64 / n as f64,
            r.error,
            r.note
        );
        before += r.bytes_before;
        after += r.bytes_after;
        weights += n;
        kept += usize::from(r.bytes_after == r.bytes_before);
    }
    let kept = match kept {
        0 => String::new(),
        k => format!(" ({k} left f32: see above)"),
    };
    println!(
        "{}: {} weights in {} matrices{kept} quantized (the embeddings and 1-D tensors stay \
         f32), {:.3} bits per weight, {before} → {after} bytes; {} written in {secs:.2} s",
        scheme.describe(),
        weights,
        reports.len(),
        8.0 * after as f64 / weights.max(1) as f64,
        args.out.display()
    );
    Ok(())
}
