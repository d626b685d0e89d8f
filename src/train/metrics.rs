//! Metrics as JSON Lines: one object per line with an "event" field ("step", "eval", "end").

use crate::error::{Error, Result};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Metrics {
    file: Option<(PathBuf, std::io::BufWriter<std::fs::File>)>,
}

impl Metrics {
    /// Writes to `path`, or nowhere when `None`: a new run truncates it, a resumed one
    /// (`append`) continues the history it holds.
    pub fn create(path: Option<&Path>, append: bool) -> Result<Metrics> {
        let file = match path {
            None => None,
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                        path: dir.to_path_buf(),
                        error: source,
                    })?;
                }
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .append(append)
                    .truncate(!append)
                    .open(p)
                    .map_err(|source| Error::Io {
                        path: p.to_path_buf(),
                        error: source,
                    })?;
                Some((p.to_path_buf(), std::io::BufWriter::new(f)))
            }
        };
        Ok(Metrics { file })
    }

    /// Appends `{"event": event, ...fields}`.
    pub fn write(&mut self, event: &str, fields: Value) -> Result<()> {
        let Some((path, w)) = &mut self.file else {
            return Ok(());
        };
        let mut obj = serde_json::Map::new();
        obj.insert("event".into(), event.into());
        if let Value::Object(f) = fields {
            obj.extend(f);
        }
        let io = |source| Error::Io {
            path: path.clone(),
            error: source,
        };
        writeln!(w, "{}", Value::Object(obj)).map_err(io)?;
        w.flush().map_err(|source| Error::Io {
            path: path.clone(),
            error: source,
        })
    }
}
