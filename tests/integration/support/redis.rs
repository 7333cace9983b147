//! A real `redis-server` per test, on a free loopback port with persistence off, stopped by its
//! PID (never by name); and a TCP relay that delays Redis' answers, to inject latency.
//!
//! `redis-server` must be installed (`.ci/run` installs the Debian package when it is missing).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a `redis-server` may take to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A running `redis-server` child process.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// Extra arguments, given again on restart.
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server on a free 127.0.0.1 port. redis-server cannot take a bound socket, so a
    /// port is picked by binding port 0 and closing it; if another process takes it first, the
    /// server says so and another port is tried.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// [`RedisServer::start`] with extra `redis-server` arguments (`--requirepass`, TLS), which
    /// come last and so override the defaults (`--port 0 --tls-port <port>` serves TLS only on the
    /// port this server reports).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        for _ in 0..10 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if let Some(child) = spawn(port, dir.path(), &extra) {
                return RedisServer {
                    child: Some(child),
                    port,
                    dir,
                    extra,
                };
            }
        }
        panic!("redis-server did not start on any of 10 free ports");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL to its PID) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a new server process on the same port (after [`RedisServer::kill`]): empty, as a
    /// restarted Redis without persistence is.
    pub fn restart(&mut self) {
        self.kill();
        let child = spawn(self.port, self.dir.path(), &self.extra)
            .unwrap_or_else(|| panic!("redis-server did not restart on port {}", self.port));
        self.child = Some(child);
    }

    /// A plain (synchronous) connection for the test's own commands (not for a TLS-only or
    /// password-protected server).
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap()
    }

    /// Every key matching `pattern`, found with SCAN.
    pub fn scan(&self, pattern: &str) -> Vec<String> {
        let mut connection = self.connection();
        let mut keys: Vec<String> = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .clone()
            .iter(&mut connection)
            .unwrap()
            .map(|key: redis::RedisResult<String>| key.unwrap())
            .collect();
        keys.sort();
        keys
    }

    /// The `calls` of one command in `INFO commandstats` (`evalsha`, `eval`, `script|load`), 0
    /// when it was never called.
    pub fn calls(&self, command: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.connection())
            .unwrap();
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `redis-server` on `port` (`{port}` in `extra` is replaced by it); `None` when the port
/// was taken.
fn spawn(port: u16, dir: &std::path::Path, extra: &[String]) -> Option<Child> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--daemonize", "no"])
        .args(["--logfile", ""])
        .arg("--dir")
        .arg(dir)
        .args(extra.iter().map(|a| a.replace("{port}", &port.to_string())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run redis-server (apt-get install redis-server): {e}"));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // Keep draining so the server never blocks on a full pipe.
                continue;
            }
        }
    });
    let deadline = std::time::Instant::now() + READY_WITHIN;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("Ready to accept connections") => return Some(child),
            Ok(line) if line.contains("Address already in use") => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server on port {port} was not ready within {READY_WITHIN:?}");
            }
        }
    }
}

/// A TCP relay in front of a Redis that holds each of Redis' answers for a settable delay.
pub struct DelayRelay {
    addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl DelayRelay {
    /// Relays connections on a new loopback port to `target`, initially without delay.
    pub async fn start(target: SocketAddr) -> DelayRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = delay_ms.clone();
        let task = tokio::spawn(async move {
            while let Ok((downstream, _)) = listener.accept().await {
                let delay = delay.clone();
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut down_read, mut down_write) = downstream.into_split();
                    let (mut up_read, mut up_write) = upstream.into_split();
                    let requests = tokio::spawn(async move {
                        tokio::io::copy(&mut down_read, &mut up_write).await
                    });
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match up_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let ms = delay.load(Ordering::Relaxed);
                        if ms > 0 {
                            // The injected latency (not synchronisation).
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                        if down_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    requests.abort();
                });
            }
        });
        DelayRelay {
            addr,
            delay_ms,
            task,
        }
    }

    /// `redis://` URL of the relay.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Holds every answer from now on for `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(u64::try_from(delay.as_millis()).unwrap(), Ordering::Relaxed);
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
