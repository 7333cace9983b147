//! Starting and stopping a keygate instance: bind, spawn the listeners, drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use arc_swap::ArcSwap;

use crate::admin::{Admin, AdminState};
use crate::app::{self, Shared};
use crate::audit::{
    Auditor, EventSource, FileSink, FileSinkConfig, Sink, StdoutSink, WebhookConfig, WebhookSink,
};
use crate::config::{AuditConfig, Config, IdentitySource};
use crate::identity::basic::UpstreamResolver;
use crate::identity::cache::IdentityCache;
use crate::identity::directory::Directory;
use crate::identity::{Authenticator, Source};
use crate::policy::quota::{self, Ledger};
use crate::policy::runtime::{AuthzError, AuthzRuntime, UpstreamFetch};
use crate::proxy::links::Links;
use crate::proxy::Upstream;
use crate::ratelimit::RateLimiter;
use crate::reconcile::{self, ReconcileError, ReconcileMetrics, Reconciler, Report, RunOptions};
use crate::reload::{ReloadError, Reloader, Revision, WATCH_INTERVAL};
use crate::server::{self, ConnSettings, Listener, ShutdownTrigger};
use crate::stages::audit::AuditContext;
use crate::telemetry::metrics::{
    AuditSnapshot, AuditSource, ClusterCount, QuotaSnapshot, QuotaSource,
};
use crate::telemetry::Metrics;
use crate::tls::{self, TlsError};

/// Why keygate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener address could not be bound.
    #[error("cannot listen on `{addr}`: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Certificates or keys could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The static key directory could not be loaded.
    #[error("identity directory: {0}")]
    Directory(#[from] crate::identity::directory::DirectoryError),
    /// Authorization data files could not be loaded.
    #[error("authorization data: {0}")]
    Authz(#[from] AuthzError),
    /// An audit sink could not be opened.
    #[error("audit: {0}")]
    Audit(#[from] crate::audit::AuditError),
    /// No randomness for the identity cache key.
    #[error("no secure randomness available")]
    Random,
    /// A JWT issuer's keys, a brokered credential or the OAuth bindings could not be set up.
    #[error("identity: {0}")]
    External(#[from] crate::identity::ExternalError),
}

/// A running keygate instance.
pub struct Gateway {
    local_addr: SocketAddr,
    admin_addr: SocketAddr,
    egress_addr: Option<SocketAddr>,
    admin: Arc<AdminState>,
    metrics: Arc<Metrics>,
    trigger: ShutdownTrigger,
    tasks: JoinSet<()>,
    background: JoinSet<()>,
    auditor: Arc<Auditor>,
    reloader: Arc<Reloader>,
    reconciler: Option<Arc<Reconciler>>,
}

/// Binds the listeners and starts serving. Must run inside a tokio runtime.
pub async fn build(config: Config) -> Result<Gateway, StartError> {
    tls::install_provider();
    let mut metrics = Metrics::new();
    let upstream = Arc::new(Upstream::new(&config.upstream)?);
    let server_tls = match &config.listener.tls {
        Some(files) => Some(tls::server_config_with_clients(
            &files.cert,
            &files.key,
            config
                .identity
                .mtls
                .as_ref()
                .map(|m| m.verifier())
                .transpose()?,
        )?),
        None => None,
    };
    let tcp = bind(config.listener.address).await?;
    let listener = Listener::new(tcp, server_tls).map_err(|source| StartError::Bind {
        addr: config.listener.address,
        source,
    })?;
    let admin_tcp = bind(config.admin.address).await?;
    let admin_listener = Listener::new(admin_tcp, None).map_err(|source| StartError::Bind {
        addr: config.admin.address,
        source,
    })?;
    let local_addr = listener.local_addr();
    let admin_addr = admin_listener.local_addr();

    let limiter = Arc::new(ArcSwap::from_pointee(RateLimiter::new(&config.ratelimit)));
    let fetch = config
        .upstream
        .credential
        .as_ref()
        .and_then(|c| UpstreamFetch::new(upstream.clone(), c));
    let authz = Arc::new(
        AuthzRuntime::new(config.authz.clone(), config.policy.clone(), fetch)
            .with_rate_limits(config.ratelimit.canonical()),
    );
    if let Err(err) = authz.refresh().await {
        if !authz.refreshes_from_upstream() {
            return Err(err.into());
        }
        // Upstream-sourced data: start, but not ready, and deny governed requests until loaded.
        tracing::warn!(error = %err, "Authorization data not loaded yet; retrying in the background");
    }
    let authenticator = Arc::new(authenticator(&config, &upstream, &authz).await?);
    let auditor = Arc::new(auditor(&config.audit)?);
    metrics.register_audit(audit_snapshot(auditor.clone()));
    let ledger = Ledger::new();
    let quota = quota::Guard::new(
        config.quota.clone(),
        ledger.clone(),
        config.authz.max_staleness,
    );
    let reconcile_metrics = config
        .reconcile
        .as_ref()
        .map(|_| ReconcileMetrics::register(metrics.registry_mut()));
    if config.reconcile.is_some() {
        metrics.register_quota(quota_snapshot(quota.clone(), authz.clone()));
    }
    let shared_store = limiter.load().shared_store().cloned();
    if let Some(store) = &shared_store {
        metrics.register_ratelimit_shared(store.up_gauge());
    }
    let metrics = Arc::new(metrics);
    let reloader = Reloader::new(&config, limiter.clone(), authz.clone(), metrics.clone());
    let source = match &config.audit.instance_id {
        Some(id) => EventSource::new(id),
        None => EventSource::from_hostname(),
    };
    let egress = match &config.egress {
        Some(egress) => Some(egress_listener(&config, egress, &auditor, &source, &metrics).await?),
        None => None,
    };
    let reconciler = reconciler(
        &config,
        &upstream,
        &auditor,
        &source,
        &ledger,
        reconcile_metrics,
    );
    let audit = AuditContext::new(auditor.clone(), source, config.audit.ungoverned);
    let shared = Shared {
        upstream,
        metrics: metrics.clone(),
        access_log: config.log.access_log,
        max_body_bytes: config.limits.max_body_bytes,
        authenticator,
        limiter: limiter.clone(),
        authz: authz.clone(),
        audit,
        quota,
        links: links(&config),
        body_timeout: config.upstream.body_timeout,
    };
    let settings = conn_settings(&config);
    let admin_settings = ConnSettings {
        max_connections: server::ADMIN_MAX_CONNECTIONS,
        max_connections_per_ip: None,
        ..settings.clone()
    };
    let admin = AdminState::new(metrics.clone());
    {
        let authz = authz.clone();
        admin.set_revision(Box::new(move || authz.revision()));
    }
    {
        let authz = authz.clone();
        admin.add_check(Box::new(move || authz.readiness()));
        let auditor = auditor.clone();
        admin.add_check(Box::new(move || {
            if auditor.is_healthy() {
                Ok(())
            } else {
                Err("audit file sink failed".into())
            }
        }));
    }
    let (trigger, shutdown) = server::shutdown_pair();
    let mut background = JoinSet::new();
    if authz.refreshes_from_upstream() {
        background.spawn(refresh_loop(authz.clone(), reloader.clone()));
    }
    background.spawn(housekeeping(limiter, metrics.clone()));
    if let Some(store) = shared_store {
        // Probes Redis now and after every failure; /readyz does not depend on it.
        background.spawn(store.run());
    }
    background.spawn(reloader.clone().watch(WATCH_INTERVAL));
    if let (Some(reconciler), Some(interval)) = (
        &reconciler,
        config.reconcile.as_ref().and_then(|r| r.interval),
    ) {
        // A first run at once: the quota guard needs its counts.
        background.spawn(reconcile::run_every(reconciler.clone(), interval));
    }
    // Registered here, before `build` returns, so a SIGHUP never meets the default disposition
    // (terminate) once keygate is up: `systemctl reload` must not stop it.
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangup) => {
            background.spawn(reload_on_hangup(reloader.clone(), hangup));
        }
        Err(err) => tracing::warn!(error = %err, "Cannot listen for SIGHUP; restart to reload"),
    }
    let mut tasks = JoinSet::new();
    let max_connections = settings.max_connections;
    // One composed service: the egress listener's decrypted requests go through the very same
    // pipeline as the reverse-proxy listener's.
    let pipeline = app::pipeline(&shared);
    let egress_addr = egress.as_ref().map(|(listener, _)| listener.local_addr());
    let mut egress_max = 0;
    if let Some((egress_listener, egress_settings)) = egress {
        let max_connections = egress_settings.max_connections;
        tasks.spawn(server::serve(
            egress_listener,
            pipeline.clone(),
            egress_settings,
            shutdown.clone(),
        ));
        egress_max = max_connections;
    }
    tasks.spawn(server::serve(
        listener,
        pipeline,
        settings,
        shutdown.clone(),
    ));
    tasks.spawn(server::serve(
        admin_listener,
        Admin::new(admin.clone()),
        admin_settings,
        shutdown,
    ));
    tracing::info!(
        listener.address = %local_addr,
        tls = config.listener.tls.is_some(),
        max_connections,
        "Listening"
    );
    tracing::info!(admin.address = %admin_addr, "Admin listening");
    if let Some(addr) = egress_addr {
        tracing::info!(egress.address = %addr, max_connections = egress_max, "Egress listening");
    }
    admin.set_ready(true);
    Ok(Gateway {
        local_addr,
        admin_addr,
        egress_addr,
        admin,
        metrics,
        trigger,
        tasks,
        background,
        auditor,
        reloader,
        reconciler,
    })
}

/// The reconciler, when `[reconcile]` is configured (validation made sure of the audit file and
/// the credential).
fn reconciler(
    config: &Config,
    upstream: &Arc<Upstream>,
    auditor: &Arc<Auditor>,
    source: &EventSource,
    ledger: &Arc<Ledger>,
    metrics: Option<ReconcileMetrics>,
) -> Option<Arc<Reconciler>> {
    let settings = config.reconcile.as_ref()?;
    let file = config.audit.file.as_ref()?;
    let fetch = UpstreamFetch::new(upstream.clone(), config.upstream.credential.as_ref()?)?;
    let reconciler = Reconciler::new(
        file.path.clone(),
        auditor.clone(),
        source.clone(),
        Arc::new(fetch),
        settings,
        ledger.clone(),
    );
    Some(Arc::new(match metrics {
        Some(metrics) => reconciler.with_metrics(metrics),
        None => reconciler,
    }))
}

/// Reads the key counts per cluster for `/metrics`.
fn quota_snapshot(quota: Arc<quota::Guard>, authz: Arc<AuthzRuntime>) -> QuotaSource {
    Box::new(move || {
        let limit = quota.config().map(|c| c.kafka_keys_per_cluster);
        let clusters = match (quota.ledger().counts(), authz.snapshot()) {
            (Some((counts, _)), Some(snapshot)) => quota::all_loads(&counts, snapshot.inventory())
                .into_iter()
                .map(|load| ClusterCount {
                    kind: load.kind_str(),
                    id: load.id,
                    keys: load.keys,
                })
                .collect(),
            _ => Vec::new(),
        };
        QuotaSnapshot { limit, clusters }
    })
}

/// The downstream listener's connection settings; `max_connections` defaults to what the
/// open-file limit allows (see `server::default_max_connections`).
fn conn_settings(config: &Config) -> ConnSettings {
    let listener = &config.listener;
    let max_connections = match listener.max_connections {
        Some(max) => {
            let max = max.get();
            let room = server::default_max_connections();
            if max > room {
                tracing::warn!(
                    max_connections = max,
                    open_files = server::open_file_limit(),
                    "listener.max_connections is above what the open-file limit leaves room for; accepts may fail with `too many open files`"
                );
            }
            max
        }
        None => server::default_max_connections(),
    };
    ConnSettings {
        header_read_timeout: listener.header_read_timeout,
        idle_timeout: listener.idle_timeout,
        max_header_bytes: listener.max_header_bytes,
        shutdown_grace: listener.shutdown_grace,
        max_connections,
        max_connections_per_ip: listener.max_connections_per_ip.map(|n| n.get()),
        h2_keep_alive_interval: listener.h2_keep_alive_interval,
        h2_keep_alive_timeout: listener.h2_keep_alive_timeout,
    }
}

/// The link rewriter, or `None` when `upstream.rewrite_links` is off.
fn links(config: &Config) -> Option<Arc<Links>> {
    if !config.upstream.rewrite_links {
        return None;
    }
    if config.listener.public_url.is_none() {
        tracing::warn!(
            "listener.public_url is not set: upstream links in responses are rewritten to the \
             scheme and Host each request arrived with; set it to the URL clients use to reach \
             keygate"
        );
    }
    let scheme = if config.listener.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let origins = if config.upstream.link_origins.is_empty() {
        vec![crate::config::origin(&config.upstream.url)]
    } else {
        config.upstream.link_origins.clone()
    };
    Some(Links::new(
        &origins,
        config.listener.public_url.as_ref(),
        scheme,
        config.upstream.body_timeout,
    ))
}

/// The egress listener: bound, its certificates loaded or minted (timed: the figure is logged),
/// and its connection settings (the listener's, with its own connection limit).
async fn egress_listener(
    config: &Config,
    egress: &crate::egress::config::EgressConfig,
    auditor: &Arc<Auditor>,
    source: &EventSource,
    metrics: &Arc<Metrics>,
) -> Result<(Listener, ConnSettings), StartError> {
    let started = std::time::Instant::now();
    let certs = crate::egress::certs::InterceptCerts::load(&egress.certs, &egress.intercept)?;
    tracing::info!(
        egress.intercept = egress.intercept.len(),
        took_ms = started.elapsed().as_secs_f64() * 1000.0,
        "Egress certificates ready"
    );
    let proxy_auth = match &egress.proxy_auth {
        None => None,
        Some(crate::egress::config::ProxyAuthSource::File(path)) => Some(Directory::load(path)?),
        Some(crate::egress::config::ProxyAuthSource::IdentityDirectory) => {
            match &config.identity.source {
                IdentitySource::Directory(path) => Some(Directory::load(path)?),
                // Refused by config validation.
                IdentitySource::Upstream => None,
            }
        }
    };
    let handshake = crate::egress::Egress::new(
        egress,
        certs,
        proxy_auth,
        auditor.clone(),
        source.clone(),
        metrics.clone(),
        config.listener.max_header_bytes,
    );
    let tcp = bind(egress.address).await?;
    let listener =
        Listener::with_handshake(tcp, Arc::new(handshake)).map_err(|source| StartError::Bind {
            addr: egress.address,
            source,
        })?;
    let mut settings = conn_settings(config);
    if let Some(max) = egress.max_connections {
        settings.max_connections = max.get();
    }
    Ok((listener, settings))
}

async fn authenticator(
    config: &Config,
    upstream: &Arc<Upstream>,
    authz: &Arc<AuthzRuntime>,
) -> Result<Authenticator, StartError> {
    let source = match &config.identity.source {
        IdentitySource::Upstream => Source::Upstream(UpstreamResolver::new(upstream.clone())),
        IdentitySource::Directory(path) => Source::Directory(Directory::load(path)?),
    };
    let cache = IdentityCache::new(config.identity.cache_ttl, config.identity.cache_capacity)
        .map_err(|_| StartError::Random)?;
    // Confluent session tokens are resolved on Confluent's web host, with the upstream's client
    // settings (timeouts, extra CA).
    let web = crate::config::UpstreamConfig {
        url: config.upstream.web_url.clone(),
        ..config.upstream.clone()
    };
    let sessions = crate::identity::session::SessionResolver::new(
        Arc::new(Upstream::new(&web)?),
        config.authz.org_id.to_string(),
    );
    let authenticator = Authenticator::new(source, cache).with_sessions(sessions);
    match crate::identity::ExternalSources::build(
        config.identity.external(),
        config.upstream.credential.as_ref(),
    )
    .await?
    {
        Some(external) if config.authz.external_bindings.is_some() => {
            // Asked of the policy set in force (it reloads) on every request, cached identity or
            // not (`ExternalSources::still_admitted`); the decision asks again.
            let authz = authz.clone();
            let bound = crate::identity::BoundCheck::new(move |external| {
                authz
                    .snapshot()
                    .is_some_and(|s| s.external_bindings().binds(external))
            });
            Ok(authenticator
                .with_external(external)
                .with_external_bindings(bound))
        }
        Some(external) => Ok(authenticator.with_external(external)),
        None => Ok(authenticator),
    }
}

/// The auditor for `config` (the file sink, stdout, webhook), as `serve` and `keygate reconcile`
/// build it.
pub(crate) fn auditor(config: &AuditConfig) -> Result<Auditor, StartError> {
    let file = match &config.file {
        Some(f) => {
            let mut sink = FileSinkConfig::new(f.path.clone());
            sink.max_bytes = f.max_bytes;
            Some((FileSink::open(sink)?, f.mode))
        }
        None => None,
    };
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if config.stdout {
        sinks.push(Box::new(StdoutSink::stdout(AUDIT_QUEUE)?));
    }
    if let Some(url) = &config.webhook {
        let mut webhook = WebhookConfig::new(url.clone());
        webhook.spool_dir = config.webhook_spool.clone();
        webhook.spool_max_bytes = config.webhook_spool_max_bytes;
        if webhook.spool_dir.is_none() {
            tracing::warn!(
                "audit.webhook without an audit file or audit.webhook_spool: undelivered events \
                 wait in memory and are lost when keygate stops"
            );
        }
        sinks.push(Box::new(WebhookSink::spawn(webhook)?));
    }
    Ok(Auditor::new(file, sinks))
}

/// Reads the audit counters for `/metrics`.
fn audit_snapshot(auditor: Arc<Auditor>) -> AuditSource {
    Box::new(move || AuditSnapshot {
        file: auditor.file().map(|f| (f.stats(), f.is_healthy())),
        sinks: auditor
            .sinks()
            .iter()
            .map(|s| (s.name(), s.stats()))
            .collect(),
        scrubbed: auditor.scrubbed(),
    })
}

/// Events queued per asynchronous audit sink before new ones are dropped (and counted).
const AUDIT_QUEUE: usize = 10_000;
/// Retry interval while upstream-sourced authorization data has never loaded.
const INITIAL_LOAD_RETRY: std::time::Duration = std::time::Duration::from_secs(2);
/// How often idle rate-limit buckets are dropped.
const HOUSEKEEPING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

async fn refresh_loop(authz: Arc<AuthzRuntime>, reloader: Arc<Reloader>) {
    let interval = authz.refresh_interval();
    loop {
        let wait = if authz.is_loaded() {
            interval
        } else {
            INITIAL_LOAD_RETRY.min(interval)
        };
        tokio::time::sleep(wait).await;
        match authz.refresh().await {
            Ok(()) => {
                // The first successful load (or files changed on disk) can change the revision.
                reloader.publish();
                tracing::debug!("Authorization data refreshed");
            }
            Err(err) => {
                tracing::warn!(error = %err, "Authorization data refresh failed; keeping the previous data")
            }
        }
    }
}

/// On SIGHUP (`systemctl reload`, `kill -HUP`), reloads the policy set (see `reload.rs`); an
/// invalid set is logged and counted, and the old one stays in force.
#[cfg(unix)]
async fn reload_on_hangup(reloader: Arc<Reloader>, mut hangup: tokio::signal::unix::Signal) {
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the policy set");
        // The outcome is logged and counted by `reload`.
        let _ = reloader.reload().await;
    }
}

async fn housekeeping(limiter: Arc<ArcSwap<RateLimiter>>, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    loop {
        tick.tick().await;
        let limiter = limiter.load();
        limiter.housekeeping();
        metrics
            .ratelimit_keys
            .set(i64::try_from(limiter.key_count()).unwrap_or(i64::MAX));
    }
}

/// Connections the kernel completes and queues for a listener before keygate accepts them (capped
/// by `net.core.somaxconn`): a burst, or a full listener pausing its accepts, queues here instead
/// of being dropped and retried by the clients a second or more later.
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let bound = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As `TcpListener::bind` does: a restarted keygate can bind while old connections linger.
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    bound().map_err(|source| StartError::Bind { addr, source })
}

impl Gateway {
    /// The bound downstream address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The bound egress (forward proxy) address, when `[egress]` is configured.
    pub fn egress_addr(&self) -> Option<SocketAddr> {
        self.egress_addr
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Starts a graceful shutdown: stop accepting, drain in-flight requests for the grace period.
    pub fn shutdown(&self) {
        self.admin.set_ready(false);
        self.trigger.trigger();
    }

    /// Waits until every listener has drained (call [`Gateway::shutdown`] first).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
        self.background.abort_all();
        if let Err(err) = self.auditor.flush().await {
            tracing::error!(error = %err, "Audit flush at shutdown failed");
        }
    }

    /// Reloads the policy set now (as SIGHUP does); on error the old set stays in force.
    pub async fn reload(&self) -> Result<Revision, ReloadError> {
        self.reloader.reload().await
    }

    /// Runs a reconcile pass now (after any pass in progress), as `[reconcile] interval` does;
    /// `None` when `[reconcile]` is not configured.
    pub async fn reconcile(&self) -> Option<Result<Report, ReconcileError>> {
        Some(self.reconciler.as_ref()?.run(RunOptions::default()).await)
    }

    /// The active policy-set revision.
    pub fn revision(&self) -> Revision {
        self.reloader.revision()
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully (SIGHUP reloads, see `build`).
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        tracing::info!("Shutting down");
        self.shutdown();
        self.wait().await;
        tracing::info!("Stopped");
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
