//! An exclusive lock on a log directory, held for the log's lifetime.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{Error, Result};

/// The lock file's name in a log directory.
pub const LOCK_FILE: &str = "LOCK";

/// Holds `flock(LOCK_EX)` on `<dir>/LOCK` until dropped. The file holds the
/// holder's process id, so that the error a second opener gets names it.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub fn acquire(dir: &Path, what: &'static str) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let io = |op| {
            let path = path.clone();
            move |source| Error::Io { op, path, source }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open lock file"))?;
        // A lock this process held a moment ago can still be held by a
        // child being started (it shares the open file until it runs its
        // program): when the file names this process, try again briefly.
        let mut tries = 0;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let s = std::fs::read_to_string(&path).unwrap_or_default();
                    let ours = s.trim().parse::<u32>().ok() == Some(std::process::id());
                    if ours && tries < 20 {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        continue;
                    }
                    return Err(Error::Locked {
                        what,
                        dir: dir.to_owned(),
                        lock: path,
                        holder: holder(s.trim()),
                    });
                }
                Err(TryLockError::Error(e)) => return Err(io("lock")(e)),
            }
        }
        let pid = format!("{}\n", std::process::id());
        file.set_len(0).map_err(io("write lock file"))?;
        file.write_all_at(pid.as_bytes(), 0)
            .map_err(io("write lock file"))?;
        Ok(DirLock { _file: file })
    }
}

fn holder(pid: &str) -> String {
    match pid.parse::<u32>() {
        Ok(p) if p == std::process::id() => format!("another store of this process (pid {p})"),
        Ok(p) => format!("process {p}"),
        Err(_) => "another process".to_owned(),
    }
}

/// The path of the lock file in `dir`.
pub fn lock_path(dir: &Path) -> PathBuf {
    dir.join(LOCK_FILE)
}
