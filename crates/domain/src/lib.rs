//! mreg's domain: the registry model, the rules every value must satisfy, the errors the rest of
//! the system speaks, and the storage and cache traits the edges implement.
//!
//! Nothing here knows about HTTP, SQL or Redis. Values that carry rules (a server name, a URL, a
//! tag) can only be built by parsing, so that code holding one never has to check it again.

pub mod audit;
pub mod cache;
pub mod clock;
pub mod error;
pub mod health;
pub mod principal;
pub mod registry;
pub mod server;
pub mod store;
pub mod text;
pub mod upstream;

pub use cache::Cache;
pub use clock::Clock;
pub use error::{Error, Result};
pub use health::{Health, HealthCheck, HealthPolicy, HealthStatus, Outcome};
pub use principal::Principal;
pub use registry::{Registry, Resolved, Route, UrlGuard, now};
pub use server::{
    NewServer, Page, Patch, Server, ServerDraft, ServerName, ServerPatch, ServerQuery, ServerSort,
    ServerStatus, ServerUpdate, ServerUrl, Transport, Visibility,
};
pub use store::{
    AuditFilter, AuditStore, AuthStore, CatalogStore, Credentials, GrantRow, HealthStore, Rotation,
    SecretStore, ServerStore, ToolHit, ToolInfo, ToolQuery,
};
pub use upstream::{Sealer, UpstreamHeaders};
