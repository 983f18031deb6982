//! Abuse tests (issue #15): hostile requests through real HTTP against one real `kiln serve`
//! process. Each class sends its input, then checks that the process is alive, that a normal
//! request to the same model still succeeds, and that peak resident memory stayed under a bound.

#[path = "../common/mod.rs"]
mod common;

mod audio;
mod deadlines;
mod generator;
mod harness;
mod image;
mod panics;
mod schemas;
mod speech_synthesis;
mod storage;

pub use harness::*;
