//! The multi-tenant platform through real HTTP: API tokens and account isolation, per-task
//! rate limits and daily neurons on a moved clock, and the durable batch queue across `kill -9`.

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod batch;
mod limits;
mod tenants;
mod token_routes;
