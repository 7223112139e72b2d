//! The fuzz layer's harness (tests only). Every reader of outside bytes has a `fuzz_*` test
//! beside it that feeds it mutated valid inputs and random bytes and asserts what the readers
//! promise: no panic (proptest catches one and reports it with the input that caused it), a
//! clear error when the input is bad, and bounded memory: what a reader holds at once is measured
//! by a counting allocator (per thread, so tests running side by side do not disturb each other)
//! and must stay within a bound proportional to the input.
//!
//! Runs are seeded (the same cases every time) and sized to keep all fuzz tests together well
//! under two minutes of CI time on two cores; `GRIST_FUZZ_CASES` multiplies the cases for a
//! longer local run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn note(delta: i64) {
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            let live = LIVE.get() + delta;
            LIVE.set(live);
            if live > PEAK.get() {
                PEAK.set(live);
            }
        }
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the bookkeeping only
// touches const-initialised thread-locals (no allocation, no destructor).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the most bytes it held allocated at once on this thread.
pub fn peak_bytes<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LIVE.set(0);
    PEAK.set(0);
    TRACKING.set(true);
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    TRACKING.set(false);
    let peak = PEAK.get().max(0) as usize;
    match out {
        Ok(v) => (v, peak),
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

/// One change to an input.
#[derive(Debug, Clone)]
pub enum Edit {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    /// Repeat a stretch of the input several times in place.
    Repeat(usize, usize, u8),
    /// Overwrite a little-endian integer (4 or 8 bytes) with an interesting value.
    Word(usize, u64, bool),
}

/// Values that size fields trip over.
const INTERESTING: [u64; 14] = [
    0,
    1,
    2,
    0x7f,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    1 << 62,
    u64::MAX,
];

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(at, x)| Edit::Flip(at, x)),
        1 => any::<usize>().prop_map(Edit::Truncate),
        2 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, b)| Edit::Insert(at, b)),
        1 => (any::<usize>(), 1usize..64).prop_map(|(at, n)| Edit::Remove(at, n)),
        1 => (any::<usize>(), 1usize..32, 2u8..16).prop_map(|(at, n, k)| Edit::Repeat(at, n, k)),
        3 => (any::<usize>(), prop::sample::select(INTERESTING.to_vec()), any::<bool>())
            .prop_map(|(at, v, wide)| Edit::Word(at, v, wide)),
    ]
}

/// `seed` with `edits` applied in turn (positions taken modulo the length).
pub fn apply(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for e in edits {
        let len = b.len();
        let at = |i: usize| if len == 0 { 0 } else { i % len };
        match e {
            Edit::Flip(i, x) if len > 0 => b[at(*i)] ^= x,
            Edit::Truncate(i) => b.truncate(at(*i)),
            Edit::Insert(i, bytes) => {
                let i = at(*i);
                b.splice(i..i, bytes.iter().copied());
            }
            Edit::Remove(i, n) if len > 0 => {
                let i = at(*i);
                b.drain(i..(i + n).min(len));
            }
            Edit::Repeat(i, n, k) if len > 0 => {
                let i = at(*i);
                let piece = b[i..(i + n).min(len)].to_vec();
                for _ in 1..*k {
                    b.splice(i..i, piece.iter().copied());
                }
            }
            Edit::Word(i, v, wide) => {
                let width = if *wide { 8 } else { 4 };
                if len >= width {
                    let i = at(*i).min(len - width);
                    b[i..i + width].copy_from_slice(&v.to_le_bytes()[..width]);
                }
            }
            _ => {}
        }
    }
    b
}

/// Inputs: one of the valid `seeds` with a few edits (most cases), or random bytes.
pub fn inputs(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    prop_oneof![
        9 => (0..n, prop::collection::vec(edit(), 1..6))
            .prop_map(move |(k, edits)| apply(&seeds[k], &edits)),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ]
}

/// A JSON document with a few values replaced by ones a reader must survive (wrong types,
/// negative and huge numbers, deep nesting, missing keys), chosen by `choices`.
pub fn mutate_json(mut v: serde_json::Value, choices: &[u32]) -> serde_json::Value {
    use serde_json::{Value, json};
    let weird = [
        Value::Null,
        json!(-1),
        json!(0),
        json!(u64::MAX),
        json!(1e300),
        json!(-1e300),
        json!(""),
        json!("x".repeat(1000)),
        json!([]),
        json!({}),
        json!([[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]),
        json!(true),
        json!(4_294_967_296u64),
        json!(2_147_483_647),
    ];
    for pair in choices.chunks(2) {
        let (path_seed, what) = (pair[0], pair.get(1).copied().unwrap_or(0));
        // Walk down from the root, choosing children by the bits of `path_seed`.
        let mut path: Vec<serde_json::Value> = Vec::new();
        let mut node = &v;
        let mut bits = path_seed;
        for _ in 0..6 {
            let step = match node {
                Value::Object(m) if !m.is_empty() && bits % 4 != 0 => m
                    .keys()
                    .nth((bits as usize / 4) % m.len())
                    .map(|k| json!(k)),
                Value::Array(a) if !a.is_empty() && bits % 4 != 0 => {
                    Some(json!((bits as usize / 4) % a.len()))
                }
                _ => None,
            };
            let Some(step) = step else { break };
            node = match &step {
                Value::String(k) => &node[k.as_str()],
                _ => &node[step.as_u64().unwrap_or(0) as usize],
            };
            path.push(step);
            bits = bits.rotate_right(7).wrapping_mul(2_654_435_761);
        }
        let mut node = &mut v;
        for step in &path {
            node = match step {
                Value::String(k) => &mut node[k.as_str()],
                _ => &mut node[step.as_u64().unwrap_or(0) as usize],
            };
        }
        let first_key = match &*node {
            Value::Object(m) => m.keys().next().cloned(),
            _ => None,
        };
        match (what % 7, first_key, &mut *node) {
            (6, Some(k), Value::Object(m)) => {
                m.remove(&k);
            }
            _ => *node = weird[what as usize % weird.len()].clone(),
        }
    }
    v
}

/// Inputs for a JSON reader: byte-level edits of the documents, or value-level ones.
pub fn json_inputs(seeds: Vec<serde_json::Value>) -> impl Strategy<Value = Vec<u8>> {
    let bytes: Vec<Vec<u8>> = seeds
        .iter()
        .map(|v| serde_json::to_vec(v).expect("json"))
        .collect();
    let n = seeds.len();
    prop_oneof![
        1 => inputs(bytes),
        1 => (0..n, prop::collection::vec(any::<u32>(), 0..8)).prop_map(move |(k, c)| {
            serde_json::to_vec(&mutate_json(seeds[k].clone(), &c)).expect("json")
        }),
    ]
}

/// Cases per reader: a few thousand by default; `GRIST_FUZZ_CASES` (a factor) runs longer.
pub fn cases(base: u32) -> u32 {
    let factor: u32 = std::env::var("GRIST_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    base.saturating_mul(factor.max(1))
}

/// Runs `check` on `cases` inputs drawn from `strategy` with a fixed seed; a panic or an
/// `Err` fails the test with the (shrunk) input.
pub fn fuzz<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    check: impl Fn(S::Value) -> Result<(), String>,
) where
    S::Value: std::fmt::Debug,
{
    let config = Config {
        cases: self::cases(cases),
        rng_seed: RngSeed::Fixed(0x6772_6973_7400 ^ name.len() as u64),
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    };
    let wanted = config.cases;
    let ran = std::sync::atomic::AtomicU32::new(0);
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |input| {
        ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        check(input).map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("fuzz {name}: {e}");
    }
    let ran = ran.into_inner();
    assert!(
        ran >= wanted,
        "fuzz {name}: only {ran} of {wanted} cases ran"
    );
    eprintln!("fuzz {name}: {ran} cases");
}

/// Fails when `peak` passes `limit`, naming the reader and the input size.
pub fn within(name: &str, peak: usize, limit: usize, input_len: usize) -> Result<(), String> {
    if peak > limit {
        return Err(format!(
            "{name}: held {peak} bytes at once for an input of {input_len} bytes (limit {limit})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counting_allocator_sees_what_a_closure_holds() {
        let (_, peak) = peak_bytes(|| {
            let a = vec![0u8; 1 << 20];
            let b = vec![0u8; 1 << 10];
            drop(a);
            b.len()
        });
        assert!((1 << 20..(1 << 20) + 4096).contains(&peak), "{peak}");
        let (_, small) = peak_bytes(|| 1 + 1);
        assert_eq!(small, 0);
    }

    #[test]
    fn edits_apply_anywhere_without_panicking() {
        let seed = b"hello world".to_vec();
        let edits = [
            Edit::Word(1000, u64::MAX, true),
            Edit::Repeat(3, 4, 3),
            Edit::Remove(7, 100),
            Edit::Insert(2, vec![0xff]),
            Edit::Flip(5, 1),
            Edit::Truncate(3),
        ];
        let out = apply(&seed, &edits);
        assert!(out.len() <= 32);
        assert!(apply(&[], &edits).len() <= 1);
    }
}
