//! Assembling and running the gateway: connect the database and cache, bind the listener, serve
//! until told to stop, then drain in-flight requests within the grace period and close pools.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use domain::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::{cache, rest, store};

/// A running gateway.
pub struct Running {
    /// Where the REST API listens.
    pub api_addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// A token that stops the gateway when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the gateway has stopped (after the token is cancelled, or on a fatal error).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("the server task panicked")?
    }

    /// Stops the gateway and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}

/// Connects everything, binds the REST listener and starts serving.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let config = Arc::new(config);
    let stores = store::connect(&config).await?;
    let (cache, cache_backend) = cache::connect(&config).await?;
    tracing::info!(
        database = %config.database.redacted(),
        cache = cache_backend,
        "storage ready"
    );
    let state = rest::AppState {
        registry: Registry::new(stores.servers.clone()),
        stores: stores.clone(),
        cache,
        cache_backend,
        metrics: Metrics::new(),
        config: config.clone(),
    };
    let listener = TcpListener::bind((config.api.host.as_str(), config.api.port))
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (MREG_API_HOST/MREG_API_PORT)",
                config.api
            )
        })?;
    let api_addr = listener.local_addr()?;
    if !config.api.is_loopback() {
        tracing::warn!(
            addr = %api_addr,
            "the REST API is listening beyond loopback WITHOUT authentication; anyone who can reach it can change the registry"
        );
    }
    tracing::info!(addr = %api_addr, docs = %format!("http://{api_addr}/docs"), "REST API listening");

    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let grace = config.shutdown_grace;
    let router = rest::router(state);
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, router)
            .with_graceful_shutdown(token.clone().cancelled_owned())
            .into_future();
        let mut server = tokio::spawn(serve);
        let result = tokio::select! {
            ended = &mut server => ended.context("the REST server panicked")?.context("the REST server failed"),
            () = token.cancelled() => {
                tracing::info!(grace_secs = grace.as_secs(), "shutting down: draining in-flight requests");
                match tokio::time::timeout(grace, &mut server).await {
                    Ok(ended) => ended.context("the REST server panicked")?.context("the REST server failed"),
                    Err(_) => {
                        tracing::warn!("requests still in flight after the grace period; closing them");
                        server.abort();
                        Ok(())
                    }
                }
            }
        };
        stores.close().await;
        tracing::info!("stopped");
        result
    });
    Ok(Running {
        api_addr,
        shutdown,
        task,
    })
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("received SIGINT"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}
