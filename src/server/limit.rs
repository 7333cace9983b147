//! How many downstream connections a listener holds, and which one goes when it is full.
//!
//! Every accepted connection takes a [`Slot`] in its listener's [`Connections`]; the slot is given
//! back when the connection's task ends. At `max_connections` the accept loop accepts a new
//! connection only to replace a waiting one, which it asks to close: first the oldest one that
//! has not completed a request head yet (silent, slow, or just connected), else the oldest one
//! with nothing in flight (an idle keep-alive connection, which HTTP lets a server close at any
//! time). A connection with a request in flight is never evicted; when every connection is busy,
//! the loop stops accepting until one closes (the kernel's backlog holds the newcomers). So a flood
//! of connections neither fails every `accept` with "too many open files" nor locks out the
//! well-behaved clients, and the admin listener, which has its own [`Connections`], keeps
//! answering. Optionally, one source address may hold at most so many connections; beyond that
//! a new connection is closed right after `accept`.
//!
//! The default limit is sized from the process's open-file limit, leaving room for the upstream
//! connections, the admin listener and files.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::io::{CloseRequest, ConnState};

/// Connections the admin listener holds at most: probes and scrapes, never traffic.
pub const ADMIN_MAX_CONNECTIONS: usize = 128;
/// Open files assumed when the limit cannot be read (the common soft limit).
const FALLBACK_OPEN_FILES: u64 = 1024;
/// The smallest default `max_connections`, however low the open-file limit.
const MIN_DEFAULT_CONNECTIONS: usize = 64;

/// The default `listener.max_connections`: the soft open-file limit less a quarter (at least
/// 256) for upstream connections, the audit and policy files and the runtime, and less the admin
/// listener's connections.
pub fn default_max_connections() -> usize {
    max_connections_for(open_file_limit().unwrap_or(FALLBACK_OPEN_FILES))
}

fn max_connections_for(open_files: u64) -> usize {
    let files = usize::try_from(open_files).unwrap_or(usize::MAX);
    let reserve = (files / 4).max(256) + ADMIN_MAX_CONNECTIONS;
    files.saturating_sub(reserve).max(MIN_DEFAULT_CONNECTIONS)
}

/// The soft limit on open files (`RLIMIT_NOFILE`), from `/proc/self/limits` (Linux); `None` when
/// unreadable or unlimited.
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_file_limit(&limits)
}

fn parse_open_file_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A listener's connections. See the module doc.
#[derive(Debug)]
pub(super) struct Connections {
    max: usize,
    per_ip: Option<(usize, Mutex<HashMap<IpAddr, usize>>)>,
    open: AtomicUsize,
    /// Every connection in accept order; entries of closed ones are dropped lazily.
    all: Mutex<VecDeque<Weak<ConnState>>>,
    /// Connections that had not completed a request head when accepted, in accept order; those
    /// that since did, or closed, are dropped lazily.
    fresh: Mutex<VecDeque<Weak<ConnState>>>,
    /// Signalled when a connection closes.
    pub(super) freed: Notify,
}

/// Why a connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct PerIpLimit;

impl Connections {
    /// At most `max` connections, and `per_ip` from one source address.
    pub(super) fn new(max: usize, per_ip: Option<usize>) -> Arc<Connections> {
        Arc::new(Connections {
            max: max.max(1),
            per_ip: per_ip.map(|n| (n, Mutex::new(HashMap::new()))),
            open: AtomicUsize::new(0),
            all: Mutex::new(VecDeque::new()),
            fresh: Mutex::new(VecDeque::new()),
            freed: Notify::new(),
        })
    }

    /// Open connections.
    pub(super) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Whether another connection fits.
    pub(super) fn has_room(&self) -> bool {
        self.open() < self.max
    }

    /// Admits a connection from `ip` accepted at `accepted`, unless its address is at its limit.
    pub(super) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        accepted: Instant,
    ) -> Result<Slot, PerIpLimit> {
        if let Some((limit, counts)) = &self.per_ip {
            let mut counts = lock(counts);
            let count = counts.entry(ip).or_insert(0);
            if *count >= *limit {
                return Err(PerIpLimit);
            }
            *count += 1;
        }
        let state = ConnState::new(accepted);
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        push(&self.all, Arc::downgrade(&state), open);
        push(&self.fresh, Arc::downgrade(&state), open);
        Ok(Slot {
            connections: Arc::clone(self),
            state,
            ip,
        })
    }

    /// The connection that can best be spared (see the module doc), other than `except`; `None`
    /// when every connection has a request in flight or was already asked to close.
    fn victim(&self, except: Option<&Arc<ConnState>>) -> Option<Arc<ConnState>> {
        let spared = |state: &Arc<ConnState>| except.is_some_and(|e| Arc::ptr_eq(e, state));
        {
            let mut fresh = lock(&self.fresh);
            // Closed connections and those that completed a head leave from the front.
            while let Some(front) = fresh.front() {
                match front.upgrade() {
                    Some(state) if state.requests() == 0 => break,
                    _ => {
                        fresh.pop_front();
                    }
                }
            }
            let found = fresh
                .iter()
                .filter_map(Weak::upgrade)
                .find(|s| s.requests() == 0 && s.is_evictable() && !spared(s));
            if found.is_some() {
                return found;
            }
        }
        lock(&self.all)
            .iter()
            .filter_map(Weak::upgrade)
            .find(|s| s.is_evictable() && !spared(s))
    }

    /// Whether a connection could be evicted to make room.
    pub(super) fn can_evict(&self) -> bool {
        self.victim(None).is_some()
    }

    /// Asks the connection that can best be spared, other than `except`, to close; `false` when
    /// there is none.
    pub(super) fn evict_one(&self, except: Option<&Arc<ConnState>>) -> bool {
        self.victim(except)
            .is_some_and(|state| state.request_close(CloseRequest::Evict))
    }

    /// Whether the listener holds more connections than its limit.
    pub(super) fn is_over(&self) -> bool {
        self.open() > self.max
    }

    /// Asks every connection to close (`Drain` or `Force`).
    pub(super) fn close_all(&self, request: CloseRequest) {
        let all = lock(&self.all);
        for state in all.iter().filter_map(Weak::upgrade) {
            state.request_close(request);
        }
    }
}

/// Appends `entry`, dropping entries of closed connections once they are most of the queue.
fn push(queue: &Mutex<VecDeque<Weak<ConnState>>>, entry: Weak<ConnState>, open: usize) {
    let mut queue = lock(queue);
    if queue.len() >= 2 * open + 64 {
        queue.retain(|e| e.strong_count() > 0);
    }
    queue.push_back(entry);
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded collections stay consistent whatever a panicking holder did.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One admitted connection; dropping it gives the place back.
#[derive(Debug)]
pub(super) struct Slot {
    connections: Arc<Connections>,
    state: Arc<ConnState>,
    ip: IpAddr,
}

impl Slot {
    /// The connection's shared state.
    pub(super) fn state(&self) -> &Arc<ConnState> {
        &self.state
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((_, counts)) = &self.connections.per_ip {
            let mut counts = lock(counts);
            if let Some(count) = counts.get_mut(&self.ip) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&self.ip);
                }
            }
        }
        self.connections.open.fetch_sub(1, Ordering::AcqRel);
        self.connections.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn open_file_limit_is_read_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            20000                20000                files     \n";
        assert_eq!(parse_open_file_limit(text), Some(20000));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_file_limit(unlimited), None);
    }

    #[test]
    fn default_leaves_room_for_upstream_files_and_admin() {
        assert_eq!(max_connections_for(1024), 1024 - 256 - 128);
        assert_eq!(max_connections_for(20_000), 20_000 - 5_000 - 128);
        assert_eq!(max_connections_for(65_536), 65_536 - 16_384 - 128);
        assert_eq!(max_connections_for(100), MIN_DEFAULT_CONNECTIONS);
        assert!(default_max_connections() >= MIN_DEFAULT_CONNECTIONS);
    }

    #[tokio::test]
    async fn slots_count_and_give_back() {
        let connections = Connections::new(2, None);
        let a = connections.admit(LOCAL, Instant::now()).unwrap();
        assert!(connections.has_room());
        let b = connections.admit(LOCAL, Instant::now()).unwrap();
        assert!(!connections.has_room());
        drop(a);
        assert!(connections.has_room());
        assert_eq!(connections.open(), 1);
        drop(b);
        assert_eq!(connections.open(), 0);
    }

    #[tokio::test]
    async fn per_ip_limit_refuses_only_that_address() {
        let connections = Connections::new(10, Some(1));
        let first = connections.admit(LOCAL, Instant::now()).unwrap();
        assert_eq!(
            connections.admit(LOCAL, Instant::now()).unwrap_err(),
            PerIpLimit
        );
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let _second = connections.admit(other, Instant::now()).unwrap();
        drop(first);
        assert!(connections.admit(LOCAL, Instant::now()).is_ok());
    }

    #[tokio::test]
    async fn eviction_prefers_the_oldest_connection_without_a_request() {
        let connections = Connections::new(4, None);
        let served = connections.admit(LOCAL, Instant::now()).unwrap();
        drop(served.state().start_request());
        let busy = connections.admit(LOCAL, Instant::now()).unwrap();
        let _in_flight = busy.state().start_request();
        let silent_old = connections.admit(LOCAL, Instant::now()).unwrap();
        let silent_new = connections.admit(LOCAL, Instant::now()).unwrap();

        assert!(connections.can_evict());
        assert!(connections.evict_one(None));
        assert_eq!(silent_old.state().close_request(), CloseRequest::Evict);
        assert_eq!(silent_new.state().close_request(), CloseRequest::None);
        // The connection just accepted is spared.
        assert!(connections.evict_one(Some(silent_new.state())));
        assert_eq!(silent_new.state().close_request(), CloseRequest::None);
        assert_eq!(served.state().close_request(), CloseRequest::Evict);
        assert!(connections.evict_one(None));
        assert_eq!(silent_new.state().close_request(), CloseRequest::Evict);
        // Never the busy one.
        assert!(!connections.can_evict());
        assert!(!connections.evict_one(None));
        assert_eq!(busy.state().close_request(), CloseRequest::None);
    }

    #[tokio::test]
    async fn close_all_reaches_every_open_connection() {
        let connections = Connections::new(4, None);
        let a = connections.admit(LOCAL, Instant::now()).unwrap();
        let b = connections.admit(LOCAL, Instant::now()).unwrap();
        drop(connections.admit(LOCAL, Instant::now()).unwrap());
        connections.close_all(CloseRequest::Drain);
        assert_eq!(a.state().close_request(), CloseRequest::Drain);
        assert_eq!(b.state().close_request(), CloseRequest::Drain);
    }
}
