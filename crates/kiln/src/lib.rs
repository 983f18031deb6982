//! The `kiln` binary's library half: configuration, model loading and the server lifecycle, so
//! that tests start the very same server in-process; and the commands that talk to a running
//! server (`client`).

pub mod client;
mod cluster;
pub mod config;
mod fault_injection;
mod media_engines;
mod model_installer;
pub mod models;
pub mod platform_cli;
mod seq2seq_engine;
pub mod server;
mod text_models;

pub use config::ServeConfig;
pub use server::{start, start_with_clock, RunningServer};
