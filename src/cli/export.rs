//! `wgtrain export`: a checkpoint as one safetensors file, whatever layout wrote it (a
//! sharded checkpoint's index and parts consolidated on the host, streaming).

use anyhow::Result;
use std::path::PathBuf;
use wgtrain::train::checkpoint::{self, Checkpoint};

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The checkpoint: one file, or a sharded checkpoint's index (the file its run wrote under
    /// the checkpoint's name, beside its `.stepN.partIofN` parts).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Where to write the one-file checkpoint (.safetensors); never the checkpoint itself or
    /// one of its parts.
    #[arg(long)]
    out: PathBuf,
    /// Replace a model file already at --out.
    #[arg(long)]
    overwrite: bool,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let ckpt = Checkpoint::load(&args.checkpoint)?;
    let inputs: Vec<&std::path::Path> = std::iter::once(args.checkpoint.as_path())
        .chain(ckpt.parts.iter().map(|p| p.as_path()))
        .collect();
    wgtrain::files::claim_output(&args.out, &inputs, args.overwrite, "the checkpoint")?;
    let parts = ckpt.parts.len();
    drop(ckpt);
    let bytes = checkpoint::export(&args.checkpoint, &args.out)?;
    eprintln!(
        "exported {} ({}) to {}: {bytes} bytes",
        args.checkpoint.display(),
        match parts {
            0 => "one file".to_string(),
            n => format!("{n} parts"),
        },
        args.out.display()
    );
    Ok(())
}
