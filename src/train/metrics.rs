//! Metrics as JSON Lines: one object per line with an "event" field ("step", "eval", "end").

use crate::error::{Error, Result};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Metrics {
    file: Option<(PathBuf, std::io::BufWriter<std::fs::File>)>,
    /// What this process wrote, as curves (for `--plot` without a metrics file).
    curves: Curves,
}

/// A run's loss curves: (step, training loss) at logging steps, (step, eval loss) at evaluations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Curves {
    pub train: Vec<(f64, f64)>,
    pub eval: Vec<(f64, f64)>,
}

impl Curves {
    fn add(&mut self, event: &str, fields: &serde_json::Map<String, Value>) {
        let num = |k: &str| fields.get(k).and_then(Value::as_f64);
        match (event, num("step")) {
            ("step", Some(step)) => self.train.extend(num("loss").map(|l| (step, l))),
            ("eval", Some(step)) => self.eval.extend(num("eval_loss").map(|l| (step, l))),
            _ => {}
        }
    }

    /// The curves of the metrics file at `path` (a regular file of at most 1 GiB).
    pub fn load(path: &Path) -> Result<Curves> {
        let bytes = crate::files::read_capped(path, 1 << 30, "metrics file")?;
        Self::parse(&String::from_utf8_lossy(&bytes))
            .map_err(|e| Error::Data(format!("{}: not a metrics file: {e}", path.display())))
    }

    /// The curves of a metrics file's text (JSON Lines; lines that are not records are an
    /// error naming the line).
    pub fn parse(text: &str) -> std::result::Result<Curves, String> {
        let mut c = Curves::default();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: Value =
                serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
            let Value::Object(obj) = v else {
                return Err(format!("line {}: not a JSON object", i + 1));
            };
            let event = obj.get("event").and_then(Value::as_str).unwrap_or_default();
            c.add(event, &obj);
        }
        Ok(c)
    }
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
        Ok(Metrics {
            file,
            curves: Curves::default(),
        })
    }

    /// The curves written so far by this process.
    pub fn curves(&self) -> &Curves {
        &self.curves
    }

    /// The metrics file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(p, _)| p.as_path())
    }

    /// Appends `{"event": event, ...fields}`.
    pub fn write(&mut self, event: &str, fields: Value) -> Result<()> {
        let mut obj = serde_json::Map::new();
        obj.insert("event".into(), event.into());
        if let Value::Object(f) = fields {
            obj.extend(f);
        }
        self.curves.add(event, &obj);
        let Some((path, w)) = &mut self.file else {
            return Ok(());
        };
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
