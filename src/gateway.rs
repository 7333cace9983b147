//! Starting and stopping a keygate instance: bind, spawn the listeners, drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::admin::{Admin, AdminState};
use crate::app::{self, Shared};
use crate::config::Config;
use crate::proxy::Upstream;
use crate::server::{self, ConnSettings, Listener, ShutdownTrigger};
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
}

/// A running keygate instance.
pub struct Gateway {
    local_addr: SocketAddr,
    admin_addr: SocketAddr,
    admin: Arc<AdminState>,
    metrics: Arc<Metrics>,
    trigger: ShutdownTrigger,
    tasks: JoinSet<()>,
}

/// Binds the listeners and starts serving. Must run inside a tokio runtime.
pub async fn build(config: Config) -> Result<Gateway, StartError> {
    tls::install_provider();
    let metrics = Arc::new(Metrics::new());
    let upstream = Arc::new(Upstream::new(&config.upstream)?);
    let server_tls = match &config.listener.tls {
        Some(files) => Some(tls::server_config(&files.cert, &files.key)?),
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

    let shared = Shared {
        upstream,
        metrics: metrics.clone(),
        access_log: config.log.access_log,
    };
    let settings = ConnSettings {
        header_read_timeout: config.listener.header_read_timeout,
        max_header_bytes: config.listener.max_header_bytes,
        shutdown_grace: config.listener.shutdown_grace,
    };
    let admin = AdminState::new(metrics.clone());
    let (trigger, shutdown) = server::shutdown_pair();
    let mut tasks = JoinSet::new();
    tasks.spawn(server::serve(
        listener,
        app::pipeline(&shared),
        settings.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(server::serve(
        admin_listener,
        Admin::new(admin.clone()),
        settings,
        shutdown,
    ));
    tracing::info!(listener.address = %local_addr, tls = config.listener.tls.is_some(), "Listening");
    tracing::info!(admin.address = %admin_addr, "Admin listening");
    admin.set_ready(true);
    Ok(Gateway {
        local_addr,
        admin_addr,
        admin,
        metrics,
        trigger,
        tasks,
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
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
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully.
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
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
