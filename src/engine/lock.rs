//! One run at a time per workdir. A whole `grist run` holds an exclusive lock on
//! `<workdir>/.grist.lock`; processes that run one phase (`--phase`, a scheduler's array tasks)
//! hold it shared, so they run side by side but never beside a whole run. The exclusive holder
//! writes who it is into the file, so the run that finds the workdir busy can say who holds it.
//! The lock goes with the process (an OS file lock), so a killed run leaves nothing to clean up.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use crate::error::{GristError, IoContext, Result};

pub struct WorkdirLock {
    file: Option<File>,
    exclusive: bool,
}

impl Drop for WorkdirLock {
    /// A whole run that ends clears its name, so phase runs after it are not taken for it.
    fn drop(&mut self) {
        if let (Some(f), true) = (&self.file, self.exclusive) {
            let _ = f.set_len(0);
        }
    }
}

impl WorkdirLock {
    /// Takes the lock of `workdir` (created if needed): exclusive for a whole run, shared for
    /// a run of one phase. Fails at once, naming the holder, when another run has it. Where the
    /// file system has no locks (some network mounts), runs go on with a warning.
    pub fn acquire(workdir: &Path, exclusive: bool) -> Result<WorkdirLock> {
        std::fs::create_dir_all(workdir).at(workdir)?;
        let path = workdir.join(".grist.lock");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .at(&path)?;
        let taken = match exclusive {
            true => file.try_lock(),
            false => file.try_lock_shared(),
        };
        match taken {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(GristError::Usage(format!(
                    "{} is in use by another grist run ({}); wait for it to finish or stop it",
                    workdir.display(),
                    holder(&mut file, &path)
                )));
            }
            Err(TryLockError::Error(e)) => {
                tracing::warn!(
                    "{}: cannot lock ({e}); nothing keeps two runs of this workdir apart",
                    path.display()
                );
                return Ok(WorkdirLock {
                    file: None,
                    exclusive,
                });
            }
        }
        if exclusive {
            let who = format!(
                "pid {} on {}, `{}`, started at Unix time {}",
                std::process::id(),
                hostname(),
                std::env::args().collect::<Vec<_>>().join(" "),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            );
            file.set_len(0).at(&path)?;
            file.rewind().at(&path)?;
            file.write_all(who.as_bytes()).at(&path)?;
        }
        Ok(WorkdirLock {
            file: Some(file),
            exclusive,
        })
    }
}

/// Who holds the lock: the whole run that wrote its name there, if that process is alive;
/// otherwise processes running one phase each (they write nothing).
fn holder(file: &mut File, path: &Path) -> String {
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.take(1024).read_to_string(&mut text);
    let who = text.trim();
    let pid = who
        .strip_prefix("pid ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse::<u32>().ok());
    let here = who.contains(&format!(" on {}, ", hostname()));
    let gone = pid.is_some_and(|p| here && !Path::new(&format!("/proc/{p}")).exists());
    if who.is_empty() || gone {
        format!(
            "processes running one phase each; lock file {}",
            path.display()
        )
    } else {
        who.to_string()
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "this host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_run_excludes_others_and_phase_runs_share() {
        let dir = tempfile::tempdir().unwrap();
        let whole = WorkdirLock::acquire(dir.path(), true).unwrap();
        let err = WorkdirLock::acquire(dir.path(), true)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("in use by another grist run")
                && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(WorkdirLock::acquire(dir.path(), false).is_err());
        drop(whole);
        let a = WorkdirLock::acquire(dir.path(), false).unwrap();
        let b = WorkdirLock::acquire(dir.path(), false).unwrap();
        assert!(WorkdirLock::acquire(dir.path(), true).is_err());
        drop((a, b));
        assert!(WorkdirLock::acquire(dir.path(), true).is_ok());
    }
}
