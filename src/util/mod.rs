//! The bottom layer's small shared pieces: a seeded RNG, the test hooks that crash-safety tests
//! stop or break a process with, and facts about the machine.

pub mod hook;
pub mod machine;
pub mod rng;
pub mod size;

pub use machine::available_memory;
pub use rng::{SplitMix64, permutation};
