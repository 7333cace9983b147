//! Limits shared by every replica, kept in Redis (or Valkey).
//!
//! One request costs one round trip whatever number of shared limits apply to it: a Lua script
//! (`shared/gcra.lua`, run with `EVALSHA`; after a `NOSCRIPT` the `redis` crate loads it and
//! retries) decides all of them atomically with GCRA on the server's clock, charging all or none,
//! and answers allow, or deny with the numbers for `Retry-After` and `X-RateLimit-*`. Every key
//! expires when its bucket is full again, so Redis holds only the callers active within one
//! refill period.
//!
//! # Keys
//!
//! `{<key_prefix>}:<limit id>:<interval µs>x<burst>:<subject>`, where the subject is `g` (global),
//! `p:<principal id>` or `a4:<IPv4>` / `a6:<IPv6 /64 prefix>` (principal), and `pa:<action>:`
//! followed by one of those (principal and action). The `{…}` is a Redis Cluster hash tag: a script
//! may only touch keys of one slot, and every request's keys include the one global bucket, so all
//! keys of the limiter carry the same tag. The quota is part of the key, so a reload that changes
//! a limit's quota starts it afresh (as the local buckets do) while unchanged limits keep their
//! counts.
//!
//! # When Redis cannot answer
//!
//! A check that fails or takes longer than `command_timeout` opens the circuit: from then on
//! requests do not wait for Redis at all, and each shared limit behaves as its `on_unavailable`
//! says (the replica's own bucket, 503, or no limit). A background task ([`SharedStore::run`])
//! probes Redis every `probe_interval` (PING, then loading the script) and closes the circuit when
//! it answers in time. Each change of state is one log line and the gauge
//! `keygate_ratelimit_shared_up`; readiness is not affected (a replica without Redis still serves).
//! A check cut off by the timeout may still have been applied by Redis: the caller then paid
//! tokens for a request that was decided locally. That errs on the side of the limit.
//!
//! Nothing here sees a credential of a caller; the store's own password stays inside the `redis`
//! client (whose `Debug` masks it) and is never logged.

pub(crate) mod config;

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Notify;

pub use self::config::{OnUnavailable, RawSecretRef, RawSharedConfig, SecretSource, SharedConfig};

use super::config::LimitSpec;
use super::Subject;
use crate::model::Action;

/// The GCRA script; see the comment at its top.
const GCRA: &str = include_str!("shared/gcra.lua");

/// Largest value a Lua number (a double) holds exactly, in microseconds (about 285 years): a
/// shared limit's refill time must stay below it.
const MAX_EXACT_MICROS: u64 = 1 << 53;

/// Whole microseconds, rounded up (so a shared limit is never looser than its local twin).
fn micros(d: Duration) -> u64 {
    let whole = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    whole.saturating_add(u64::from(!d.subsec_nanos().is_multiple_of(1000)))
}

/// What one shared limit contributes to every check: its key stem and its quota in the script's
/// units. Built once per limiter.
#[derive(Debug, Clone)]
pub(super) struct SharedLimit {
    /// `{prefix}:<id>:<interval>x<burst>:`.
    stem: Box<str>,
    interval_us: u64,
    burst: u32,
}

impl SharedLimit {
    pub(super) fn new(store: &SharedStore, spec: &LimitSpec) -> SharedLimit {
        let interval_us = micros(spec.quota.replenish_interval()).max(1);
        let burst = spec.burst();
        SharedLimit {
            stem: format!("{}{}:{interval_us}x{burst}:", store.inner.key_stem, spec.id)
                .into_boxed_str(),
            interval_us,
            burst,
        }
    }

    /// Writes the key of `who` (doing `action`) in this limit to `key`.
    fn write_key(
        &self,
        key: &mut String,
        kind: super::KeyKind,
        who: &Subject<'_>,
        action: Option<Action>,
    ) {
        key.clear();
        key.push_str(&self.stem);
        match kind {
            super::KeyKind::Global => key.push('g'),
            super::KeyKind::Principal => push_subject(key, who),
            super::KeyKind::PrincipalAction => {
                key.push_str("pa:");
                key.push_str(action.map_or("-", Action::as_str));
                key.push(':');
                push_subject(key, who);
            }
        }
    }
}

fn push_subject(key: &mut String, who: &Subject<'_>) {
    match who {
        Subject::Principal { id, .. } => {
            key.push_str("p:");
            key.push_str(id);
        }
        Subject::Address(ip) => match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let _ = write!(key, "a4:{v4}");
            }
            // The /64 prefix, as the local buckets key IPv6 (see `key.rs`).
            IpAddr::V6(v6) => {
                let _ = write!(key, "a6:{:016x}", v6.to_bits() >> 64);
            }
        },
    }
}

/// Redis' answer to one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Every limit allowed, and all were charged.
    Allowed,
    /// The limit at `position` (in push order) refused with the longest wait; nothing was charged.
    Refused {
        position: usize,
        /// Until the request would be allowed.
        wait: Duration,
        /// Until that bucket is full again.
        reset: Duration,
    },
}

/// Why Redis could not decide.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SharedError {
    /// No answer within the deadline.
    #[error("no answer within {}ms", .0.as_millis())]
    Timeout(Duration),
    /// Connection, protocol or server error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The script answered something it never answers.
    #[error("unexpected answer from the rate-limit script")]
    Reply,
}

/// A shared limit could not be checked and is configured to refuse then (`on_unavailable =
/// "deny"`): a 503, never a 429 (no limit was exceeded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate limit `{limit_id}` cannot be checked because the shared rate-limit store (Redis) is unavailable, and it is configured to refuse requests then (on_unavailable = \"deny\"); retry later")]
pub struct SharedUnavailable {
    limit_id: Arc<str>,
    retry_after: Duration,
}

impl SharedUnavailable {
    pub(super) fn new(limit_id: &Arc<str>, retry_after: Duration) -> SharedUnavailable {
        SharedUnavailable {
            limit_id: Arc::clone(limit_id),
            retry_after,
        }
    }

    /// A refusal by `limit_id`, for tests of how it is rendered.
    #[cfg(test)]
    pub(crate) fn sample(limit_id: &str) -> SharedUnavailable {
        SharedUnavailable {
            limit_id: Arc::from(limit_id),
            retry_after: Duration::from_secs(1),
        }
    }

    /// The limit that could not be checked.
    pub fn limit_id(&self) -> &str {
        &self.limit_id
    }

    /// `Retry-After` (RFC 9110 §10.2.3) in whole seconds, at least 1: about when the store is
    /// probed again.
    pub fn retry_after_secs(&self) -> u64 {
        super::whole_seconds(self.retry_after)
    }
}

/// Circuit states.
const STARTING: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// The connection to the shared store and its circuit breaker. Cheap to clone (one `Arc`); a
/// reconfigured limiter keeps the same store, so shared counters and the connection survive
/// reloads.
#[derive(Clone)]
pub struct SharedStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: SharedConfig,
    client: Result<redis::Client, redis::RedisError>,
    /// Created on first use, inside the runtime (it spawns a task).
    manager: OnceLock<Result<ConnectionManager, redis::RedisError>>,
    script: redis::Script,
    key_stem: String,
    state: AtomicU8,
    wake: Notify,
    up: Gauge<i64, AtomicI64>,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore")
            .field("url", self.inner.config.url())
            .field("state", &self.inner.state.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SharedStore {
    /// A store for `config`. Opens nothing yet: requests open the connection on first use, and
    /// [`SharedStore::run`] (which must be spawned) probes it and brings it back after failures.
    pub fn new(config: &SharedConfig) -> SharedStore {
        let client = config.client();
        if let Err(err) = &client {
            tracing::error!(redis.url = %config.url(), error = %err, "Shared rate limits cannot be used: invalid connection settings");
        }
        SharedStore {
            inner: Arc::new(Inner {
                key_stem: config.key_stem(),
                config: config.clone(),
                client,
                manager: OnceLock::new(),
                script: redis::Script::new(GCRA),
                state: AtomicU8::new(STARTING),
                wake: Notify::new(),
                up: Gauge::default(),
            }),
        }
    }

    /// The settings this store was started with.
    pub(super) fn config(&self) -> &SharedConfig {
        &self.inner.config
    }

    /// `keygate_ratelimit_shared_up`: 1 while Redis answers, 0 before it first did and while it
    /// does not. Register it once.
    pub fn up_gauge(&self) -> Gauge<i64, AtomicI64> {
        self.inner.up.clone()
    }

    /// Whether requests should ask Redis (the circuit is not open).
    pub(super) fn is_usable(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) != DOWN
    }

    /// Whether Redis answered the last probe or check.
    pub fn is_up(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) == UP
    }

    /// How long until the store is probed again, for `Retry-After` on a 503.
    pub(super) fn probe_interval(&self) -> Duration {
        self.inner.config.probe_interval
    }

    fn connection(&self) -> Result<ConnectionManager, SharedError> {
        let inner = &self.inner;
        let manager = inner.manager.get_or_init(|| {
            let client = inner.client.clone()?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(inner.config.connect_timeout))
                .set_response_timeout(Some(inner.config.command_timeout))
                // One attempt per use: the circuit breaker and the probe do the retrying, so a
                // request never waits through a backoff.
                .set_number_of_retries(0);
            ConnectionManager::new_lazy_with_config(client, config)
        });
        match manager {
            Ok(manager) => Ok(manager.clone()),
            Err(err) => Err(SharedError::Redis(err.clone())),
        }
    }

    /// Decides one request's shared `limits` (each with its key kind, for `who` doing `action`) in
    /// one round trip, within `command_timeout`: one `EVALSHA <sha> <n> <keys…> <interval
    /// burst>…`, written directly rather than through `redis::ScriptInvocation` (which keeps each
    /// argument in its own buffer and copies them all into the command). After `NOSCRIPT` (Redis
    /// restarted, `SCRIPT FLUSH`) the script is loaded and the command sent once more. A refusal's
    /// position is the limit's in `limits`.
    pub(super) async fn check<'l>(
        &self,
        limits: impl Iterator<Item = (&'l SharedLimit, super::KeyKind)> + Clone,
        who: &Subject<'_>,
        action: Option<Action>,
    ) -> Result<Verdict, SharedError> {
        let timeout = self.inner.config.command_timeout;
        let mut connection = self.connection()?;
        let len = limits.clone().count();
        let mut command = redis::cmd("EVALSHA");
        command.arg(self.inner.script.get_hash()).arg(len);
        let mut key = String::with_capacity(self.inner.key_stem.len() + 80);
        for (limit, kind) in limits.clone() {
            limit.write_key(&mut key, kind, who, action);
            command.arg(key.as_str());
        }
        for (limit, _) in limits {
            command.arg(limit.interval_us).arg(limit.burst);
        }
        let script = &self.inner.script;
        let reply: Vec<i64> = tokio::time::timeout(timeout, async {
            match command.query_async(&mut connection).await {
                Err(err)
                    if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    script.prepare_invoke().load_async(&mut connection).await?;
                    command.query_async(&mut connection).await
                }
                answered => answered,
            }
        })
        .await
        .map_err(|_| SharedError::Timeout(timeout))??;
        match reply[..] {
            [1] => Ok(Verdict::Allowed),
            [0, position, wait, reset] => {
                let position = usize::try_from(position)
                    .ok()
                    .and_then(|p| p.checked_sub(1))
                    .filter(|p| *p < len)
                    .ok_or(SharedError::Reply)?;
                let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
                Ok(Verdict::Refused {
                    position,
                    wait: micros(wait),
                    reset: micros(reset),
                })
            }
            _ => Err(SharedError::Reply),
        }
    }

    /// Opens the circuit after a failed check: one log line and the gauge, once per outage, and
    /// wakes the prober.
    pub(super) fn fail(&self, err: &SharedError) {
        let previous = self.inner.state.swap(DOWN, Ordering::AcqRel);
        if previous != DOWN {
            self.inner.up.set(0);
            tracing::warn!(
                redis.url = %self.inner.config.url(),
                error = %err,
                "Shared rate limits unavailable: each shared limit now applies its on_unavailable \
                 (local, deny or allow) until Redis answers again"
            );
            self.inner.wake.notify_one();
        }
    }

    fn recovered(&self) {
        let previous = self.inner.state.swap(UP, Ordering::AcqRel);
        if previous != UP {
            self.inner.up.set(1);
            let what = if previous == STARTING {
                "Shared rate limits connected"
            } else {
                "Shared rate limits available again"
            };
            tracing::info!(redis.url = %self.inner.config.url(), "{what}");
        }
    }

    /// One probe: PING and load the script, within the connect and command timeouts. Tried a
    /// second time at once, because the first use of a dead connection only starts the reconnect.
    pub async fn probe(&self) -> Result<(), SharedError> {
        match self.probe_once().await {
            Ok(()) => Ok(()),
            Err(_) => self.probe_once().await,
        }
    }

    async fn probe_once(&self) -> Result<(), SharedError> {
        let deadline = self.inner.config.connect_timeout + self.inner.config.command_timeout;
        let mut connection = self.connection()?;
        let script = &self.inner.script;
        tokio::time::timeout(deadline, async {
            redis::cmd("PING")
                .query_async::<()>(&mut connection)
                .await?;
            script.prepare_invoke().load_async(&mut connection).await?;
            Ok::<_, SharedError>(())
        })
        .await
        .map_err(|_| SharedError::Timeout(deadline))?
    }

    /// Probes at once, then keeps the circuit honest for as long as it runs: whenever a check
    /// opened it, probes every `probe_interval` until Redis answers. Spawn it next to the server;
    /// it never returns.
    pub async fn run(self) {
        match self.probe().await {
            Ok(()) => self.recovered(),
            Err(err) => self.fail(&err),
        }
        loop {
            while self.inner.state.load(Ordering::Acquire) != DOWN {
                self.inner.wake.notified().await;
            }
            loop {
                tokio::time::sleep(self.inner.config.probe_interval).await;
                match self.probe().await {
                    Ok(()) => {
                        self.recovered();
                        break;
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "Shared rate limits: probe failed")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
