pub mod bench;
pub mod export;
pub mod generate;
pub mod info;
pub mod inspect;
pub mod observe;
pub mod optimize;
pub mod plan;
pub mod plot;
pub mod quantize;
pub mod sample;
pub mod train;

/// Writes a command's output file atomically (a temporary beside it, renamed over it), after
/// the command claimed it before its work ([`wgtrain::files::claim_output`]).
pub fn write_output(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    wgtrain::files::write_atomically(path, bytes)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}
