//! mreg, the MCP Registry Gateway: the edges around the domain (configuration, storage, cache,
//! REST API, CLI). The binary in `main.rs` is a thin shell over this library, so that the
//! integration tests start exactly what users run.

pub mod app;
pub mod audit;
pub mod authn;
pub mod cache;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod egress;
pub mod guard;
pub mod health;
pub mod http;
pub mod jsonrpc;
pub mod listing;
pub mod mcp;
pub mod metrics;
pub mod oauth;
pub mod policy;
pub mod proxy;
pub mod rest;
pub mod state;
pub mod store;
pub mod tasks;
pub mod telemetry;
