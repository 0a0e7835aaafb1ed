//! Assembling and running the gateway: connect the database and cache, bind the REST and MCP
//! listeners, serve until told to stop, then drain in-flight requests within the grace period
//! and close pools.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use domain::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{AuthMode, Config, Listen};
use crate::crypto::Cipher;
use crate::metrics::Metrics;
use crate::tasks::Tasks;
use crate::{cache, mcp, rest, store};

/// A running gateway.
pub struct Running {
    /// Where the REST API listens.
    pub api_addr: SocketAddr,
    /// Where the MCP listener (gateway, `/mcp`) listens.
    pub mcp_addr: SocketAddr,
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

/// Listeners bound before the gateway starts (by a test harness that must know a port first,
/// or a supervisor that hands sockets over); a listener not given is bound from the
/// configuration. Either way, without authentication only a loopback address is accepted.
#[derive(Debug, Default)]
pub struct Listeners {
    /// For the REST API, instead of `MREG_API_HOST`/`MREG_API_PORT`.
    pub api: Option<TcpListener>,
    /// For the MCP listener, instead of `FASTMCP_SERVER_HOST`/`FASTMCP_SERVER_PORT`.
    pub mcp: Option<TcpListener>,
}

async fn bind(
    bound: Option<TcpListener>,
    listen: &Listen,
    what: &str,
    variables: &str,
    auth: AuthMode,
) -> anyhow::Result<TcpListener> {
    let refuse = |at: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "refusing to listen on {at} for the {what} without authentication: bind {variables} to loopback, or configure an identity provider (AZURE_* or MREG_OIDC_*) and MREG_AUTH=oauth"
        )
    };
    if let Some(listener) = bound {
        let at = listener.local_addr()?;
        if auth == AuthMode::None && !at.ip().is_loopback() {
            return Err(refuse(&at));
        }
        return Ok(listener);
    }
    if auth == AuthMode::None && !listen.is_loopback() {
        return Err(refuse(listen));
    }
    TcpListener::bind((listen.host.as_str(), listen.port))
        .await
        .with_context(|| format!("cannot listen on {listen} for the {what} ({variables})"))
}

/// When a listener stops and how it drains (see [`serve`]).
#[derive(Clone)]
struct Lifetime {
    /// Cancelled when shutdown starts.
    token: CancellationToken,
    /// How long in-flight requests may still run.
    grace: Duration,
    /// `MREG_HEADER_TIMEOUT`.
    header_timeout: Duration,
    /// Told when the grace period ends with requests still running.
    audit: crate::audit::Auditor,
    /// Cancelled then too (see [`Tasks::cut_off`]).
    cut_off: CancellationToken,
}

/// How long requests cut off at the end of the grace period have to send their last words.
const LAST_WORDS: Duration = Duration::from_millis(300);

/// Serves `router` on `listener` until `token` is cancelled, then drains for at most `grace`,
/// then cancels `cut_off` and closes what is left.
///
/// A connection must send each request's headers within `header_timeout`, counted from when it
/// opened or its previous answer ended, and no gap between the bytes of a request body may be
/// longer: a client that trickles headers or a body (slowloris) or keeps an idle keep-alive
/// connection open is disconnected then, so held connections are bounded by time, not only by
/// the file-descriptor limit. A streamed answer (SSE) is not affected.
async fn serve(
    name: &'static str,
    listener: TcpListener,
    router: Router,
    life: Lifetime,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};

    let Lifetime {
        token,
        grace,
        header_timeout,
        audit,
        cut_off,
    } = life;

    // A request body must keep coming too: no gap between its bytes longer than the same limit
    // (a client that sends headers and then trickles, or stops, its body is cut off).
    let router = router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        header_timeout,
    ));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(name, &e).await;
                    continue;
                }
            },
            () = token.cancelled() => break,
        };
        while connections.try_join_next().is_some() {}
        // Every accepted socket sends at once: with Nagle's algorithm on, an answer written in
        // pieces (headers, then SSE events) waits for the client's delayed ACK, about 40 ms per
        // call on a keep-alive connection.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted socket");
        }
        let router = router.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                tower::Service::call(&mut router.clone(), request)
            },
        );
        let connection = graceful.watch(http.serve_connection(TokioIo::new(tcp), service));
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    if tokio::time::timeout(grace, &mut drained).await.is_err() {
        tracing::warn!(
            listener = name,
            "requests still in flight after the grace period; closing them"
        );
        audit.cutting_off();
        // What still answers a request ends it with a JSON-RPC error saying mreg stopped, and
        // gets a moment to send it before the connections close.
        cut_off.cancel();
        let _ = tokio::time::timeout(LAST_WORDS, &mut drained).await;
        connections.abort_all();
        // Each one's audit entry is recorded as it is dropped.
        while connections.join_next().await.is_some() {}
    }
    Ok(())
}

/// What to do when accepting a connection failed: a connection reset before it was accepted is
/// nothing; anything else (out of file descriptors) is logged and waited out briefly, so the
/// loop does not spin while the condition lasts.
async fn accept_failed(name: &str, e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(listener = name, error = %e, "cannot accept connections; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Warns of each registered server that a policy rule naming no tenant (`[servers.NAME]`) names
/// but does not govern (another tenant's own server of that name, in a gateway admitting several
/// tenants): such a rule governed every tenant's server before names were per tenant, so an
/// operator upgrading may be relying on it, and the server now follows the default rule.
async fn warn_of_rules_left_behind(
    policy: &crate::config::policy::Policy,
    admitted: &[String],
    servers: &dyn domain::ServerStore,
) {
    for rule in policy.unqualified_server_rules() {
        let Ok(name) = domain::ServerName::parse(rule) else {
            continue;
        };
        let named = match servers.named(&name).await {
            Ok(named) => named,
            Err(e) => {
                tracing::warn!(error = %e, rule, "cannot check which servers a policy rule governs");
                continue;
            }
        };
        for server in policy.left_to_default(&named) {
            // Stored data, shown as text an operator can copy into the policy file.
            let tenant = server.tenant.as_deref().unwrap_or_default().escape_debug();
            let advice = match server.tenant.as_deref() {
                Some(t) if !t.is_empty() && admitted.iter().any(|a| a.eq_ignore_ascii_case(t)) => {
                    format!("to govern it, add [servers.\"{tenant}/{rule}\"]")
                }
                _ => "this gateway does not admit that tenant, so no rule can name it".to_owned(),
            };
            tracing::warn!(
                "policy: [servers.{rule}] governs tenantless servers and the home tenant's only; \
                 tenant {tenant}'s server '{rule}' follows the default rule \
                 ([servers.\"{tenant}/*\"], else [servers.\"*\"]): {advice}"
            );
        }
    }
}

/// Connects everything, binds both listeners and starts serving.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    start_on(config, Listeners::default()).await
}

/// [`start`], serving on the `listeners` given (the others bound from the configuration).
pub async fn start_on(config: Config, listeners: Listeners) -> anyhow::Result<Running> {
    let config = Arc::new(config);
    let shutdown = CancellationToken::new();
    // Background work stops as shutdown starts; shutdown waits for it after the listeners.
    let tasks = Tasks::new(shutdown.child_token());
    let stores = store::connect(&config).await?;
    let (cache, cache_backend) = cache::connect(&config).await?;
    tracing::info!(
        database = %config.database.redacted(),
        cache = cache_backend,
        "storage ready"
    );
    warn_of_rules_left_behind(
        &config.policy,
        &config.azure.tenancy().2,
        stores.servers.as_ref(),
    )
    .await;
    let cipher = Arc::new(Cipher::from_config(&config, stores.secrets.as_ref()).await?);
    let auth = config.auth.mode;
    if auth == AuthMode::None {
        tracing::warn!(
            "AUTHENTICATION IS OFF (MREG_AUTH=none, or no identity provider configured): every caller is an administrator; only loopback binds are allowed"
        );
    }
    let api = bind(
        listeners.api,
        &config.api,
        "REST API",
        "MREG_API_HOST/MREG_API_PORT",
        auth,
    )
    .await?;
    let mcp = bind(
        listeners.mcp,
        &config.mcp,
        "MCP listener",
        "FASTMCP_SERVER_HOST/FASTMCP_SERVER_PORT",
        auth,
    )
    .await?;
    let (api_addr, mcp_addr) = (api.local_addr()?, mcp.local_addr()?);
    let (auditor, audit_writer) = if config.audit.enabled {
        let (auditor, writer) = crate::audit::writer::spawn(
            stores.audit.clone(),
            &crate::audit::writer::WriterConfig {
                queue: config.audit.queue,
                spool: config.audit.spool.clone(),
                spool_max_bytes: config.audit.spool_max_bytes,
                redact: config.policy.redact.clone(),
                refusal_window: config.audit.refusal_window,
            },
        )?;
        (auditor, Some(writer))
    } else {
        tracing::warn!("THE AUDIT LOG IS OFF (MREG_AUDIT=false): nothing is recorded");
        (crate::audit::Auditor::off(), None)
    };
    let metrics = Metrics::with_collectors(
        auditor
            .shared_status()
            .into_iter()
            .map(|status| Box::new(status) as Box<dyn prometheus_client::collector::Collector>)
            .collect(),
    );
    // Server names are private to their tenant with authentication on; `/metrics` answers anyone.
    metrics.per_server(
        config
            .metrics_per_server
            .unwrap_or(config.auth.mode == AuthMode::None),
    );
    let limits = Arc::new(crate::policy::limits::Limits::default());
    let oauth = match (
        auth,
        crate::oauth::upstream::Upstream::from_config(&config)?,
    ) {
        (AuthMode::OAuth, Some(upstream)) => {
            let oauth = crate::oauth::OAuth::new(
                &config,
                &format!("http://{mcp_addr}"),
                upstream,
                &stores,
                cache.clone(),
                cipher.clone(),
                auditor.clone(),
                tasks.clone(),
            )?
            .limiting(crate::policy::limits::AddressLimit::new(
                config.auth.oauth_rate_limit_per_minute,
                config.auth.trusted_proxy_hops,
                cache.clone(),
                limits.clone(),
                metrics.clone(),
            ));
            tracing::info!(issuer = %oauth.issuer, upstream = ?oauth.upstream, "OAuth authorization server on");
            Some(Arc::new(oauth))
        }
        _ => None,
    };
    let egress = Arc::new(crate::egress::Egress::new(
        auth == AuthMode::None,
        config.upstream_allow.clone(),
        config.public_url.as_ref(),
    ));
    egress.listening_on(&[api_addr, mcp_addr]);
    let gate = crate::policy::Gate::new(
        Arc::new(config.policy.clone()),
        limits,
        cache.clone(),
        metrics.clone(),
        oauth.is_some(),
    );
    let registry = Registry::new(stores.servers.clone(), cipher.clone())
        .with_url_guard(egress.clone())
        .with_observer(std::sync::Arc::new(crate::audit::note_server));
    let upstream = crate::proxy::upstream_client(egress.clone())?;
    let health = Arc::new(crate::health::Monitor::new(
        registry.clone(),
        stores.clone(),
        upstream.clone(),
        egress.clone(),
        config.clone(),
        metrics.clone(),
        tasks.clone(),
    ));
    let authn = Arc::new(crate::authn::Authenticator::new(
        oauth.clone(),
        gate.clone(),
        auditor.clone(),
        cache.clone(),
        stores.auth.clone(),
        config.max_body_bytes,
    ));
    let proxy = Arc::new(crate::proxy::Proxy {
        registry: registry.clone(),
        gate: gate.clone(),
        health: health.clone(),
        audit: auditor.clone(),
        metrics: metrics.clone(),
        cipher: cipher.clone(),
        egress: egress.clone(),
        gateway: crate::proxy::http_client::gateway_client(egress.clone())?,
        upstream,
        tasks: tasks.clone(),
    });
    let state = crate::state::AppState::new(crate::state::Shared {
        tasks: tasks.clone(),
        registry,
        cipher,
        proxy,
        gateway_url: config.public_url.as_ref().map_or_else(
            || format!("http://{mcp_addr}"),
            |u| u.as_str().trim_end_matches('/').to_owned(),
        ),
        health,
        stores: stores.clone(),
        cache,
        cache_backend,
        metrics,
        config: config.clone(),
        authn,
        gate,
        oauth,
        audit: auditor,
    });
    tracing::info!(addr = %api_addr, docs = %format!("http://{api_addr}/docs"), "REST API listening");
    tracing::info!(addr = %mcp_addr, endpoint = %format!("http://{mcp_addr}/mcp"), "MCP listener listening");

    let grace = config.shutdown_grace;
    // What still runs when the grace period ends is cut off (see Tasks::cut_off).
    let life = Lifetime {
        token: shutdown.clone(),
        grace,
        header_timeout: config.header_timeout,
        audit: state.audit.clone(),
        cut_off: state.tasks.cut_off(),
    };
    let api_task = serve("REST", api, rest::router(state.clone()), life.clone());
    // MCP sessions end only once the listener has drained, so a call in flight at shutdown
    // gets its answer (or, cut off at the end of the grace period, an error saying so); open
    // GET streams end as shutdown starts.
    let sessions = CancellationToken::new();
    let mcp_task = serve(
        "MCP",
        mcp,
        mcp::router(state.clone(), sessions.clone(), shutdown.clone()),
        life,
    );
    if state.oauth.is_some() {
        let store = stores.auth.clone();
        tasks.periodic("oauth_prune", Duration::from_secs(3600), move || {
            prune_grants(store.clone())
        });
    }
    if let (Some(retention), true) = (config.audit.retention, config.audit.enabled) {
        let store = stores.audit.clone();
        tasks.periodic("audit_prune", Duration::from_secs(3600), move || {
            crate::audit::writer::prune(store.clone(), retention)
        });
    }
    if config.health.enabled {
        state.health.clone().start(&tasks);
    }
    let token = shutdown.clone();
    let audit = state.audit.clone();
    #[allow(
        clippy::disallowed_methods,
        reason = "the gateway itself: its handle is Running, awaited by wait()"
    )]
    let task = tokio::spawn(async move {
        let stopping = async {
            token.cancelled().await;
            tracing::info!(
                grace_secs = grace.as_secs(),
                "shutting down: draining in-flight requests"
            );
        };
        let ((), api, mcp) = tokio::join!(stopping, api_task, mcp_task);
        // What still runs in a session now is cut off, and recorded so.
        audit.cutting_off();
        sessions.cancel();
        // The monitor has stopped probing since shutdown began; probes and retries it or a
        // request started end now.
        tasks.close(grace).await;
        // Every request has ended: write what the audit queue holds before the pool closes.
        if let Some(writer) = audit_writer {
            writer.close(grace + Duration::from_secs(10)).await;
        }
        stores.close().await;
        tracing::info!("stopped");
        api.and(mcp)
    });
    Ok(Running {
        api_addr,
        mcp_addr,
        shutdown,
        task,
    })
}

/// A registered client without any grant is forgotten after this long (seconds).
const UNUSED_CLIENT_SECS: i64 = 7 * 86_400;

/// Deletes ended refresh-token families, and clients that never got (or no longer hold) a grant
/// for a week (one run of the hourly `oauth_prune` task).
async fn prune_grants(store: Arc<dyn domain::AuthStore>) -> Result<String, String> {
    let now = domain::now().unix_timestamp();
    // Each runs whatever the other did.
    let grants = store.prune_grants(now).await;
    let clients = store.prune_clients(now - UNUSED_CLIENT_SECS).await;
    match (grants, clients) {
        (Ok(0), Ok(0)) => Ok(String::new()),
        (Ok(grants), Ok(clients)) => Ok(format!(
            "pruned {grants} ended OAuth grant(s) and {clients} client(s) without grants"
        )),
        (Err(e), _) => Err(format!("cannot prune OAuth grants: {e}")),
        (_, Err(e)) => Err(format!("cannot prune OAuth clients: {e}")),
    }
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
