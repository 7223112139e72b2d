//! A test hook for crash-safety tests. With `GRIST_PAUSE_AT=<point>:<n>` in the environment the
//! process stops for good the n-th time any thread reaches `point`, after printing
//! `grist: paused at <point>` on stderr, so a test can SIGKILL it at a known place. Points:
//! `batch` (a batch written, files still temporary), `commit` (a task's files renamed, no marker
//! yet), `marker` (a task's marker written), `stats` (stats being merged, under the lock),
//! `train_step` (a training step's metrics written, its checkpoint not yet), `train_checkpoint`
//! (a checkpoint's files written under their temporary name, not yet renamed).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

static TARGET: OnceLock<Option<(String, usize)>> = OnceLock::new();
static COUNT: AtomicUsize = AtomicUsize::new(0);

pub fn checkpoint(point: &str) {
    let target = TARGET.get_or_init(|| {
        let v = std::env::var("GRIST_PAUSE_AT").ok()?;
        let (p, n) = v.rsplit_once(':')?;
        Some((p.to_string(), n.parse().ok()?))
    });
    let Some((p, n)) = target else { return };
    if p != point {
        return;
    }
    if COUNT.fetch_add(1, Ordering::SeqCst) + 1 == *n {
        eprintln!("grist: paused at {point}");
        loop {
            std::thread::park();
        }
    }
}
