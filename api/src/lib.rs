//! Switchyard's HTTP service. `main.rs` only parses the command line and calls in here; tests use the same code.

pub mod app;
pub mod config;
pub mod console;
pub mod drain;
pub mod error;
pub mod extract;
pub mod fairness;
pub mod idempotent;
pub mod metrics;
pub mod ocpp;
pub mod routes;
pub mod seed;
pub mod ws;
pub use switchyard_core::telemetry;

pub use app::{AppState, Server};
pub use config::Config;
