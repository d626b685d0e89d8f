//! The output directory a run writes its checkpoints to. A run claims it: a lock file keeps a
//! second run from writing there at the same time, temporary files a killed writer left are
//! removed, and a checkpoint of another run is not replaced unless the user says so.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Held while a run writes to its directory: the writer's process id.
pub const LOCK_FILE: &str = ".wgtrain.lock";

/// A claimed output directory; the lock goes when this is dropped.
pub struct OutDir {
    dir: PathBuf,
    lock: PathBuf,
    /// Temporary files of killed writers removed when it was claimed.
    pub removed_temporaries: usize,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |error| Error::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Whether process `pid` is running (Linux: /proc; elsewhere assumed, so a stale lock there
/// is removed by hand).
fn alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

impl OutDir {
    /// Claims `dir` for the run `run` (a fresh run's id, or the resumed checkpoint's), which
    /// writes `checkpoint`: creates it, takes the lock (another live run holding it is an error;
    /// a lock whose process is gone is taken over), removes temporary files, and refuses when
    /// `checkpoint` there belongs to another run, unless `overwrite`.
    pub fn claim(dir: &Path, checkpoint: &str, run: &str, overwrite: bool) -> Result<OutDir> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock = dir.join(LOCK_FILE);
        for attempt in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock)
            {
                Ok(mut f) => {
                    write!(f, "{}", std::process::id()).map_err(io(&lock))?;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt == 0 => {
                    let holder = std::fs::read_to_string(&lock).unwrap_or_default();
                    match holder.trim().parse::<u32>() {
                        Ok(pid) if alive(pid) => {
                            return Err(Error::Config(format!(
                                "{} is in use by another wgtrain run (process {pid}, lock file \
                                 {}); wait for it to finish or choose another --out",
                                dir.display(),
                                lock.display()
                            )));
                        }
                        // its process is gone (killed): the lock is stale
                        _ => std::fs::remove_file(&lock).map_err(io(&lock))?,
                    }
                }
                Err(e) => return Err(io(&lock)(e)),
            }
        }
        let mut claimed = OutDir {
            dir: dir.to_path_buf(),
            lock,
            removed_temporaries: 0,
        };
        claimed.removed_temporaries = claimed.remove_temporaries()?;
        let path = dir.join(checkpoint);
        if path.exists() && !overwrite {
            let whose = match super::checkpoint::peek(&path) {
                Some((_, other)) if !run.is_empty() && other == run => None,
                Some((step, _)) => Some(format!("a checkpoint of another run (step {step})")),
                None => Some("a file that is not a readable wgtrain checkpoint".to_string()),
            };
            if let Some(whose) = whose {
                return Err(Error::Checkpoint {
                    path,
                    reason: format!(
                        "is {whose}; pass --overwrite to replace it, --resume it to continue \
                         that run, or choose another --out"
                    ),
                });
            }
        }
        Ok(claimed)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Removes `.NAME.tmp-PID` files (see `crate::files::write_atomically`): with the lock held,
    /// no other writer is using them.
    fn remove_temporaries(&self) -> Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.contains(".tmp-") && entry.path().is_file() {
                std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl Drop for OutDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lock);
    }
}
