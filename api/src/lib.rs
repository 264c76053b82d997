//! Conclave's client-facing HTTP API: REST under `/v1`, health and readiness, one JSON error
//! shape. Handlers are thin: authenticate, validate, call the router.

pub mod a2a;
pub mod audit;
pub mod auth;
pub mod calendar;
pub mod error;
pub mod live;
pub mod mcp;
pub mod openapi;
pub mod policy;
pub mod routes;
pub mod state;
pub mod validate;
pub mod webhooks;

pub use routes::{app, openapi};
pub use state::{AppState, Shared};
