//! Test hooks for crash-safety tests. With `GRIST_PAUSE_AT=<point>:<n>` in the environment the
//! process stops for good the n-th time any thread reaches `point`, after printing
//! `grist: paused at <point>` on stderr, so a test can SIGKILL it at a known place. With
//! `GRIST_PANIC_AT=<point>:<n>` the thread reaching it the n-th time panics instead, so a test
//! can check that a bug inside one task fails that task only. Points: `batch` (a batch written,
//! files still temporary), `commit` (a task's files renamed, no marker yet), `marker` (a task's
//! marker written), `stats` (stats being merged, under the lock), `train_step` (a training
//! step's metrics written, its checkpoint not yet), `train_checkpoint` (a checkpoint's files
//! written under their temporary name, not yet renamed), `llm_response` (an LLM answer cached).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Target {
    point: String,
    nth: usize,
    count: AtomicUsize,
}

static PAUSE: OnceLock<Option<Target>> = OnceLock::new();
static PANIC: OnceLock<Option<Target>> = OnceLock::new();

fn target(var: &str) -> Option<Target> {
    let v = std::env::var(var).ok()?;
    let (p, n) = v.rsplit_once(':')?;
    Some(Target {
        point: p.to_string(),
        nth: n.parse().ok()?,
        count: AtomicUsize::new(0),
    })
}

/// Whether this is the n-th arrival at `point` for `target`.
fn hit(target: &Option<Target>, point: &str) -> bool {
    match target {
        Some(t) if t.point == point => t.count.fetch_add(1, Ordering::SeqCst) + 1 == t.nth,
        _ => false,
    }
}

pub fn checkpoint(point: &str) {
    if hit(PANIC.get_or_init(|| target("GRIST_PANIC_AT")), point) {
        panic!("GRIST_PANIC_AT reached {point}");
    }
    if hit(PAUSE.get_or_init(|| target("GRIST_PAUSE_AT")), point) {
        eprintln!("grist: paused at {point}");
        loop {
            std::thread::park();
        }
    }
}
