//! Reading what a user points wgtrain at, as what it is: a path must be a regular file (a
//! directory, FIFO or device is refused at once, before anything blocks or grows), a file is read
//! up to a cap, and a safetensors file's header is read and validated before its data.

use crate::error::{Error, Result};
use safetensors::tensor::Metadata;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Configs and adapter configs: far more than any real one.
pub const CONFIG_CAP: u64 = 16 << 20;
/// The most a safetensors header may be (safetensors' own limit).
pub const HEADER_CAP: u64 = 100_000_000;

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        error: source,
    }
}

fn refuse(path: &Path, reason: String) -> Error {
    io(
        path,
        std::io::Error::new(std::io::ErrorKind::InvalidInput, reason),
    )
}

/// Opens `path` if it is a regular file (after following links), with its length.
pub fn open_regular(path: &Path) -> Result<(File, u64)> {
    let meta = std::fs::metadata(path).map_err(|e| io(path, e))?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a FIFO, socket or device)"
        };
        return Err(refuse(path, format!("is {kind}; expected a file")));
    }
    let file = File::open(path).map_err(|e| io(path, e))?;
    Ok((file, meta.len()))
}

/// Claims `path` as the file a command writes (`what` names it), before any work is done: it
/// is absent or a regular file (never a directory, a device node, a FIFO or a socket), it is
/// not one of the command's `inputs` by any name (a link, another path to the same file), and
/// an existing safetensors file (a checkpoint, a quantized model, an adapter) is replaced only
/// with `overwrite`. Temporary files a killed writer of `path` left beside it are removed.
pub fn claim_output(path: &Path, inputs: &[&Path], overwrite: bool, what: &str) -> Result<()> {
    let refuse_it =
        |reason: String| Err(refuse(path, format!("{reason}; not writing {what} there")));
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.is_dir() {
            return refuse_it("is a directory".into());
        }
        if !meta.is_file() {
            return refuse_it("is not a regular file (a FIFO, socket or device)".into());
        }
        if let Some(input) = inputs.iter().find(|i| same_file(path, i)) {
            return refuse_it(format!(
                "is this command's input {} (writing there would destroy it)",
                input.display()
            ));
        }
        if !overwrite && open_safetensors(path, "model").is_ok() {
            return refuse_it(
                "holds a model file (a checkpoint, quantized model or adapter); give \
                 --overwrite to replace it"
                    .into(),
            );
        }
    }
    // a killed writer's temporaries (see `train::crate::files::write_atomically`)
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let (Some(name), Ok(listing)) = (path.file_name(), std::fs::read_dir(dir)) {
        let prefix = format!(".{}.tmp-", name.to_string_lossy());
        for entry in listing.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

/// Whether `a` and `b` name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return (x.dev(), x.ino()) == (y.dev(), y.ino());
        }
        false
    }
    #[cfg(not(unix))]
    {
        let (x, y) = (a.canonicalize(), b.canonicalize());
        x.is_ok() && x.ok() == y.ok()
    }
}

/// How many of the little-endian f32 values in `bytes` are NaN or infinite (a tensor read from
/// a file, checked before it is used).
pub fn nonfinite_f32(bytes: &[u8]) -> usize {
    bytes
        .chunks_exact(4)
        .filter(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite())
        .count()
}

/// The whole of a regular file of at most `cap` bytes (`what` names it in the error).
pub fn read_capped(path: &Path, cap: u64, what: &str) -> Result<Vec<u8>> {
    let (file, len) = open_regular(path)?;
    if len > cap {
        return Err(refuse(
            path,
            format!("is {len} bytes, more than a {what} may be ({cap} bytes)"),
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // `take`: a file that grows while it is read still stops at the cap
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io(path, e))?;
    if bytes.len() as u64 > cap {
        return Err(refuse(path, format!("grew past {cap} bytes while read")));
    }
    Ok(bytes)
}

/// [`read_capped`], decompressing a `.gz` file (gzip): the cap then bounds the decompressed
/// bytes, so a small archive cannot expand past it.
pub fn read_capped_gz(path: &Path, cap: u64, what: &str) -> Result<Vec<u8>> {
    if path.extension().is_none_or(|e| e != "gz") {
        return read_capped(path, cap, what);
    }
    let (file, _) = open_regular(path)?;
    let mut bytes = vec![];
    flate2::read::GzDecoder::new(std::io::BufReader::new(file))
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse(path, format!("is not a readable gzip file ({e})")))?;
    if bytes.len() as u64 > cap {
        return Err(refuse(
            path,
            format!("decompresses to more than a {what} may be ({cap} bytes)"),
        ));
    }
    Ok(bytes)
}

/// [`read_capped`] as UTF-8 text.
pub fn read_text_capped(path: &Path, cap: u64, what: &str) -> Result<String> {
    String::from_utf8(read_capped(path, cap, what)?)
        .map_err(|_| refuse(path, format!("is not UTF-8 text (a {what} is JSON)")))
}

/// The metadata key under which wgtrain keeps its own kind of safetensors file
/// ("wgtrain-checkpoint-1", …): `format` says "pt" in every file wgtrain writes, as Hugging
/// Face's loaders require.
pub const KIND_KEY: &str = "wgtrain_format";

/// Marks a safetensors file's metadata as wgtrain's `kind` and as loadable by Hugging Face's
/// tools (`format: "pt"`).
pub fn stamp_kind(info: &mut std::collections::HashMap<String, String>, kind: &str) {
    info.insert("format".to_string(), "pt".to_string());
    info.insert(KIND_KEY.to_string(), kind.to_string());
}

/// The wgtrain kind of a safetensors file from its metadata: under [`KIND_KEY`], or under
/// `format` in files written before it moved there.
pub fn file_kind(info: &std::collections::HashMap<String, String>) -> Option<&str> {
    info.get(KIND_KEY)
        .or_else(|| info.get("format"))
        .map(String::as_str)
}

/// A safetensors file's header, validated (offsets contiguous, sizes matching shapes and dtypes,
/// the data exactly filling the rest of the file) before any data is read, and the file
/// positioned at its data. `what` says what kind of file was expected, for the errors.
pub fn open_safetensors(path: &Path, what: &str) -> Result<(Metadata, SafetensorsData)> {
    let bad = |reason: String| Error::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let (mut file, len) = open_regular(path)?;
    let mut n = [0u8; 8];
    if len < 8 {
        return Err(bad(format!(
            "not a safetensors file (not a {what}): it is {len} bytes, too short for a header"
        )));
    }
    file.read_exact(&mut n).map_err(|e| io(path, e))?;
    let n = u64::from_le_bytes(n);
    if n > HEADER_CAP || n > len - 8 {
        return Err(bad(format!(
            "not a safetensors file (not a {what}): its header length {n} is larger than {}",
            if n > HEADER_CAP {
                format!("safetensors allows ({HEADER_CAP} bytes)")
            } else {
                format!("the file ({len} bytes)")
            }
        )));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(|e| io(path, e))?;
    // Metadata's deserializer validates the offsets, shapes and dtypes against each other.
    let meta: Metadata = serde_json::from_slice(&header).map_err(|e| {
        bad(format!(
            "not a safetensors file (not a {what}): its header is invalid ({e})"
        ))
    })?;
    let data_len = meta.data_len() as u64;
    if 8 + n + data_len != len {
        return Err(bad(format!(
            "its header describes {data_len} bytes of tensor data but the file holds {}: the \
             file is truncated or corrupted",
            len - 8 - n
        )));
    }
    Ok((
        meta,
        SafetensorsData {
            file,
            base: 8 + n,
            path: path.to_path_buf(),
        },
    ))
}

/// The data part of a safetensors file, read tensor by tensor (in any order), so no more than
/// one tensor's bytes are held beyond what the caller keeps.
pub struct SafetensorsData {
    file: File,
    /// Where the data starts in the file (past the header).
    base: u64,
    path: std::path::PathBuf,
}

impl SafetensorsData {
    /// The bytes at data offsets `start..end` (validated against the file's length when the
    /// header was).
    pub fn read(&mut self, (start, end): (usize, usize)) -> Result<Vec<u8>> {
        assert!(end >= start, "a tensor's data range");
        self.file
            .seek(SeekFrom::Start(self.base + start as u64))
            .map_err(|e| io(&self.path, e))?;
        let mut bytes = vec![0u8; end - start];
        self.file
            .read_exact(&mut bytes)
            .map_err(|e| io(&self.path, e))?;
        Ok(bytes)
    }
}

/// temp file in the same directory → write → fsync → rename over `path` → fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically_with(path, &mut |f| f.write_all(bytes))
}

/// [`write_atomically`] with the contents written by `write` (a stream of pieces).
pub(crate) fn write_atomically_with(
    path: &Path,
    write: &mut dyn FnMut(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp: PathBuf = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("checkpoint"),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(write_err(&tmp))?;
        write(&mut f).map_err(write_err(&tmp))?;
        f.sync_all().map_err(write_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(write_err(path))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// An I/O error at `path`.
fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |error| Error::Io {
        path: path.to_path_buf(),
        error,
    }
}
