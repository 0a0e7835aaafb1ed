//! mreg's integration tests: one binary, the real app on port 0, real PostgreSQL and Redis.
#![allow(
    clippy::disallowed_methods,
    reason = "tests, benchmarks and examples run their own peers and load on tokio; the bans concern the gateway's code"
)]

mod api;
mod audit;
mod cache_conformance;
mod cli;
mod health;
mod interop;
mod mcp_tools;
mod misbehaving;
mod oauth;
mod policy;
mod proxy;
mod registry_v0;
mod store_conformance;
mod support;
