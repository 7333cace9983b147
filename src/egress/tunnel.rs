//! Tunnelled hosts: where a `CONNECT` may lead, and the byte tunnel itself.
//!
//! The target's name is resolved once, and every address it resolves to must be one a proxy may
//! reach: not loopback, private (RFC 1918, RFC 6598 shared space, IPv6 unique local), link-local,
//! unspecified, multicast or broadcast, unless `egress.allow_destinations` names it. keygate then
//! connects to those very addresses (no second lookup an attacker's DNS could answer
//! differently). The tunnel copies bytes both ways until either side closes, or until neither
//! has sent anything for the idle timeout. keygate never looks at what the bytes say.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::config::{canonical, Network};

/// Why a destination may not be reached (a label for the audit event and the log).
pub(super) fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() || (a == 100 && (64..128).contains(&b)) {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_unspecified() || a == 0 {
                Some("unspecified")
            } else if v4.is_multicast() || v4.is_broadcast() {
                Some("multicast or broadcast")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unique_local() {
                Some("private")
            } else if v6.is_unicast_link_local() {
                Some("link-local")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast or broadcast")
            } else {
                None
            }
        }
    }
}

/// Why a tunnel could not be opened.
#[derive(Debug)]
pub(super) enum OpenError {
    /// The name resolved to an address the proxy may not reach.
    Forbidden {
        /// The address.
        ip: IpAddr,
        /// What kind of address it is.
        kind: &'static str,
    },
    /// The name did not resolve, or nothing answered.
    Unreachable(String),
    /// Resolving and connecting took longer than the connect timeout.
    Timeout,
}

/// Resolves `destination` (`host:port`), checks every address against `allow`, and connects.
pub(super) async fn open(
    destination: &str,
    allow: &[Network],
    timeout: Duration,
) -> Result<TcpStream, OpenError> {
    let opening = async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(destination)
            .await
            .map_err(|e| OpenError::Unreachable(format!("cannot resolve: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(OpenError::Unreachable("no address".into()));
        }
        for addr in &addrs {
            if let Some(kind) = forbidden(addr.ip()) {
                if !allow.iter().any(|n| n.contains(addr.ip())) {
                    return Err(OpenError::Forbidden {
                        ip: addr.ip(),
                        kind,
                    });
                }
            }
        }
        let stream = TcpStream::connect(&addrs[..])
            .await
            .map_err(|e| OpenError::Unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    };
    tokio::time::timeout(timeout, opening)
        .await
        .unwrap_or(Err(OpenError::Timeout))
}

/// Copies bytes both ways between `downstream` and `upstream` until one side closes (its close is
/// passed on), an error, or `idle` without a byte either way. Returns the bytes copied each way.
pub(super) async fn run(downstream: TcpStream, upstream: TcpStream, idle: Duration) -> (u64, u64) {
    let last = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut down = Active::new(downstream, last.clone(), started);
    let mut up = Active::new(upstream, last.clone(), started);
    let copying = tokio::io::copy_bidirectional(&mut down, &mut up);
    tokio::pin!(copying);
    let mut deadline = started + idle;
    loop {
        tokio::select! {
            copied = &mut copying => return copied.unwrap_or((0, 0)),
            () = tokio::time::sleep_until(deadline) => {
                let active = started + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
                if active <= Instant::now() {
                    tracing::debug!(idle = ?idle, "Tunnel idle; closed");
                    return (0, 0);
                }
                deadline = active;
            }
        }
    }
}

/// A socket that stamps the time of every successful read (milliseconds since `started`).
struct Active {
    inner: TcpStream,
    last: Arc<AtomicU64>,
    started: Instant,
}

impl Active {
    fn new(inner: TcpStream, last: Arc<AtomicU64>, started: Instant) -> Self {
        Active {
            inner,
            last,
            started,
        }
    }
}

impl AsyncRead for Active {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let ms = u64::try_from(this.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            this.last.store(ms, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Active {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_private_link_local_and_unspecified_are_forbidden() {
        for (ip, kind) in [
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "private"),
            ("fd00::1", "private"),
            ("169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
        ] {
            assert_eq!(forbidden(ip.parse().unwrap()), Some(kind), "{ip}");
        }
        for ip in ["52.1.2.3", "2606:4700::1", "100.128.0.1"] {
            assert_eq!(forbidden(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_unless_allowed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let destination = format!("localhost:{port}");
        match open(&destination, &[], Duration::from_secs(5)).await {
            Err(OpenError::Forbidden { kind, .. }) => assert_eq!(kind, "loopback"),
            other => panic!("{other:?}"),
        }
        let allow = [
            Network::parse("127.0.0.0/8").unwrap(),
            Network::parse("::1").unwrap(),
        ];
        assert!(open(&destination, &allow, Duration::from_secs(5))
            .await
            .is_ok());
    }
}
