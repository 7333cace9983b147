//! Hostile clients and stalling upstreams against a keygate binary, on one machine.
//!
//! Starts a release keygate (plain TCP; a second one with TLS for the TLS scenario) in front of an
//! upstream served by this harness, or attacks a keygate that is already running (`--addr`; the
//! scenarios that need this harness's upstream are then skipped). Everything is on 127.0.0.1,
//! bounded in connections (`--hostile`, `--idle`) and time (`--max-wait` per scenario). Each
//! scenario prints what it measures: connections held and the time keygate took to close them,
//! keygate's resident memory, and the latency of a well-behaved client meanwhile (a fresh
//! connection and one `GET` every 20 ms).
//!
//! ```text
//! cargo build --release
//! cargo run --release --example stress -- --scenarios silent,slow-h1,slow-h2,slow-tls,stalled-body
//! cargo run --release --example stress -- --scenarios idle --idle 10000
//! cargo run --release --example stress -- --scenarios conn-flood --max-connections 2000 --hostile 3000
//! ```
//!
//! Scenarios:
//! - `silent`: connections that send nothing.
//! - `slow-h1`: an HTTP/1.1 head dripped one header line every 500 ms, never finished.
//! - `slow-h2`: the HTTP/2 preface dripped a byte every 200 ms; and connections that send the
//!   preface and SETTINGS but never a request.
//! - `slow-tls`: a TLS listener; connections that send the first 10 bytes of a ClientHello.
//! - `idle`: `--idle` HTTP/1.1 keep-alive connections after one request each, and `--idle-h2`
//!   h2c connections after one request each: keygate's RSS per connection.
//! - `stalled-body`: governed creates whose upstream answers `202`, `Content-Length: 1000` and 500
//!   bytes, then stalls (caller waits, or hangs up after 200 ms), and ungoverned streams that stall:
//!   time to keygate's answer or abort, and whether every create has its `response_complete` record.
//! - `flood`: 64 keep-alive clients sending requests as fast as they can for 5 s.
//! - `conn-flood`: `--hostile` silent connections opened as fast as possible (pass
//!   `--max-connections` below it): whether the well-behaved client and the admin listener still get
//!   answers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a measurement tool: a failed setup step ends the run with its message"
)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response};
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

#[derive(Debug, Parser)]
#[command(about = "Hostile clients and stalling upstreams against keygate (loopback only)")]
struct Args {
    /// The keygate binary to start.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/keygate"))]
    keygate: PathBuf,
    /// Attack a keygate that is already running (plain HTTP) instead of starting one.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// The running keygate's process id, to read its RSS (with `--addr`).
    #[arg(long)]
    pid: Option<u32>,
    /// Scenarios to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "silent,slow-h1,slow-h2,slow-tls,stalled-body,flood,idle"
    )]
    scenarios: Vec<String>,
    /// Hostile connections per scenario.
    #[arg(long, default_value_t = 1000)]
    hostile: usize,
    /// Idle HTTP/1.1 keep-alive connections in `idle`.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Idle h2c connections in `idle`.
    #[arg(long, default_value_t = 1000)]
    idle_h2: usize,
    /// How long `idle` waits before measuring the settled RSS.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Concurrent creates (and streams) in `stalled-body`.
    #[arg(long, default_value_t = 100)]
    creates: usize,
    /// The longest a scenario waits for keygate to close its connections.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    max_wait: Duration,
    /// `listener.header_read_timeout` of the keygate this harness starts.
    #[arg(long, default_value = "3s")]
    header_read_timeout: String,
    /// `listener.idle_timeout` of the keygate this harness starts.
    #[arg(long, default_value = "60s")]
    idle_timeout: String,
    /// `listener.max_connections` of the keygate this harness starts (default: keygate's own).
    #[arg(long)]
    max_connections: Option<usize>,
    /// `log.level` of the keygate this harness starts.
    #[arg(long, default_value = "warn,keygate=info")]
    log_level: String,
    /// Append the started keygate's log lines to this file.
    #[arg(long)]
    keygate_log: Option<PathBuf>,
    /// The path well-behaved and idle clients request (with `--addr`: one the upstream answers
    /// with 200 without credentials).
    #[arg(long, default_value = "/org/v2/environments")]
    get_path: String,
    /// Write only the config fields a keygate from before the connection limits understands (to
    /// measure the old binary).
    #[arg(long)]
    legacy_config: bool,
}

/// What `--get-path` says.
static GET_PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn get_path() -> &'static str {
    GET_PATH
        .get()
        .map_or("/org/v2/environments", String::as_str)
}

#[tokio::main(worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let _ = GET_PATH.set(args.get_path.clone());
    let dir = tempfile::tempdir().unwrap();
    let upstream = if args.addr.is_none() {
        Some(spawn_upstream().await)
    } else {
        None
    };
    let plain = match (args.addr, upstream) {
        (Some(addr), _) => Target {
            addr,
            admin: None,
            pid: args.pid,
            audit: None,
            _child: None,
        },
        (None, Some(up)) => start_keygate(&args, dir.path(), up, false),
        (None, None) => unreachable!("an upstream is started when no address is given"),
    };
    println!(
        "keygate at {} (pid {:?}); idle RSS {}",
        plain.addr,
        plain.pid,
        mib(plain.rss_kib())
    );
    for scenario in &args.scenarios {
        let started = Instant::now();
        match scenario.as_str() {
            "silent" => silent(&args, &plain).await,
            "slow-h1" => slow_h1(&args, &plain).await,
            "slow-h2" => slow_h2(&args, &plain).await,
            "slow-tls" => match upstream {
                Some(up) => {
                    let tls = start_keygate(&args, dir.path(), up, true);
                    slow_tls(&args, &tls, &plain).await;
                }
                None => println!("slow-tls: skipped (needs the harness's own keygate)"),
            },
            "idle" => idle(&args, &plain).await,
            "stalled-body" => {
                if plain.audit.is_some() {
                    stalled_body(&args, &plain).await;
                } else {
                    println!("stalled-body: skipped (needs the harness's own upstream)");
                }
            }
            "flood" => flood(&plain).await,
            "conn-flood" => conn_flood(&args, &plain).await,
            other => println!("{other}: unknown scenario"),
        }
        println!("  ({:.1}s)", started.elapsed().as_secs_f64());
    }
}

// === keygate under test ===

struct Target {
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    pid: Option<u32>,
    audit: Option<PathBuf>,
    _child: Option<KillOnDrop>,
}

impl Target {
    fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SIGTERM first (keygate drains and exits), SIGKILL if it is still there after 5 s.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The directory key the governed requests authenticate with (`u-alice`, OrganizationAdmin in the
/// shipped example bindings).
const KEY_ID: &str = "STRESSALICE00001";
const SECRET: &str = "cfltStressStressStressStressStressStressStressStressStressStressSt";

fn basic() -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{KEY_ID}:{SECRET}"))
    )
}

fn start_keygate(args: &Args, dir: &Path, upstream: SocketAddr, tls: bool) -> Target {
    let name = if tls { "tls" } else { "plain" };
    let directory = dir.join("keys.toml");
    std::fs::write(
        &directory,
        format!(
            "[[keys]]\nid = \"{KEY_ID}\"\nprincipal = \"u-alice\"\nsecret_hash = \"{}\"\n",
            keygate::identity::directory::hash_secret(SECRET).unwrap()
        ),
    )
    .unwrap();
    let audit = dir.join(format!("audit-{name}.jsonl"));
    let mut listener = format!(
        "address = \"127.0.0.1:0\"\nheader_read_timeout = \"{}\"\nshutdown_grace = \"1s\"\n",
        args.header_read_timeout
    );
    let mut upstream_extra = String::new();
    if !args.legacy_config {
        listener.push_str(&format!("idle_timeout = \"{}\"\n", args.idle_timeout));
        if let Some(max) = args.max_connections {
            listener.push_str(&format!("max_connections = {max}\n"));
        }
        upstream_extra.push_str("body_timeout = \"2s\"\nbody_idle_timeout = \"2s\"\n");
    }
    if tls {
        let (cert, key) = self_signed(dir);
        listener.push_str(&format!(
            "[listener.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ));
    }
    let config = format!(
        r#"
[listener]
{listener}
[admin]
address = "127.0.0.1:0"
[upstream]
url = "http://{upstream}"
connect_timeout = "1s"
request_timeout = "2s"
{upstream_extra}
[identity]
source = "directory"
directory = "{directory}"
[authz]
org_id = "4f8c2a1e-6b3d-4e7a-9c5f-1d2e3f4a5b6c"
bindings = "policies/role-bindings.toml"
inventory = "policies/inventory.toml"
[audit]
file = "{audit}"
file_mode = "blocking"
[log]
level = "{log_level}"
access_log = false
"#,
        directory = directory.display(),
        audit = audit.display(),
        log_level = args.log_level,
    );
    let path = dir.join(format!("keygate-{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(&args.keygate)
        .args(["serve", "--config"])
        .arg(&path)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", args.keygate.display()));
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut log_file = args.keygate_log.as_ref().map(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(file) = log_file.as_mut() {
                use std::io::Write as _;
                let _ = writeln!(file, "{line}");
            }
            // A gone receiver only means nobody reads the log any more; keep draining the pipe.
            let _ = tx.send(line);
        }
    });
    let mut addr = None;
    let mut admin = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while addr.is_none() || admin.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("keygate ({name}) did not log its addresses"));
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(a) = json["listener.address"].as_str() {
            addr = a.parse().ok();
        }
        if let Some(a) = json["admin.address"].as_str() {
            admin = a.parse().ok();
        }
    }
    drop(rx);
    Target {
        addr: addr.unwrap(),
        admin,
        pid: Some(child.id()),
        audit: Some(audit),
        _child: Some(KillOnDrop(child)),
    }
}

fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

// === the harness's upstream ===

/// Header that makes the upstream stall a create's body.
const STALL: &str = "x-stress-stall";

/// Serves: `POST /iam/v2/api-keys` (a created key, or with `x-stress-stall` a 202 whose 1000-byte
/// body stops after 500 bytes), `GET /stall-stream` (a streamed body that stops after one chunk),
/// and a small JSON document for everything else.
async fn spawn_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let counter = Arc::new(AtomicU64::new(0));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    async move { Ok::<_, Infallible>(answer(&request, n)) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn answer(request: &Request<Incoming>, n: u64) -> Response<StallBody> {
    let path = request.uri().path();
    if request.method() == http::Method::POST && path == "/iam/v2/api-keys" {
        if request.headers().contains_key(STALL) {
            return Response::builder()
                .status(202)
                .header("content-type", "application/json")
                .header("content-length", "1000")
                .body(StallBody::stalling(Bytes::from(vec![b' '; 500])))
                .unwrap();
        }
        let json = format!(
            r#"{{"api_version":"iam/v2","kind":"ApiKey","id":"STRESSKEY{n:07}","spec":{{"secret":"cfltStressSecretNotForLogs"}}}}"#
        );
        return Response::builder()
            .status(202)
            .header("content-type", "application/json")
            .body(StallBody::whole(Bytes::from(json)))
            .unwrap();
    }
    if path == "/stall-stream" {
        return Response::builder()
            .status(200)
            .header("content-type", "application/octet-stream")
            .body(StallBody::stalling(Bytes::from_static(b"first chunk\n")))
            .unwrap();
    }
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(StallBody::whole(Bytes::from_static(
            br#"{"api_version":"org/v2","kind":"EnvironmentList","data":[]}"#,
        )))
        .unwrap()
}

/// A body that yields its bytes, then either ends or never yields again.
struct StallBody {
    bytes: Option<Bytes>,
    stall: bool,
}

impl StallBody {
    fn whole(bytes: Bytes) -> Self {
        StallBody {
            bytes: Some(bytes),
            stall: false,
        }
    }
    fn stalling(bytes: Bytes) -> Self {
        StallBody {
            bytes: Some(bytes),
            stall: true,
        }
    }
}

impl http_body::Body for StallBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.bytes.take() {
            Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            // Never woken again: the stall lasts until the connection closes.
            None if self.stall => Poll::Pending,
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        !self.stall && self.bytes.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match (&self.bytes, self.stall) {
            (Some(b), false) => http_body::SizeHint::with_exact(b.len() as u64),
            (None, false) => http_body::SizeHint::with_exact(0),
            _ => http_body::SizeHint::default(),
        }
    }
}

// === measuring ===

fn mib(kib: Option<u64>) -> String {
    match kib {
        Some(kib) => format!("{:.1} MiB", kib as f64 / 1024.0),
        None => "n/a".into(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1000.0)
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// The well-behaved client: a fresh connection and one `GET` every 20 ms until stopped.
struct Probe {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Vec<Duration>, usize)>,
}

impl Probe {
    fn start(addr: SocketAddr, path: &'static str) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = 0;
            while !flag.load(Ordering::Relaxed) {
                let started = Instant::now();
                let result = tokio::time::timeout(Duration::from_secs(5), async {
                    let mut stream = TcpStream::connect(addr).await?;
                    http1_get(&mut stream, path, false).await
                })
                .await;
                match result {
                    Ok(Ok(200)) => latencies.push(started.elapsed()),
                    _ => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (latencies, failed)
        });
        Probe { stop, task }
    }

    async fn report(self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        let (mut latencies, failed) = self.task.await.unwrap();
        latencies.sort();
        format!(
            "well-behaved: {} ok, {failed} failed, p50 {} p99 {} max {}",
            latencies.len(),
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
            ms(latencies.last().copied().unwrap_or_default()),
        )
    }
}

/// Sends `GET path` over HTTP/1.1 and reads the response; returns its status.
async fn http1_get(stream: &mut TcpStream, path: &str, keep_alive: bool) -> std::io::Result<u16> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: keygate\r\nConnection: {connection}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    read_response(stream).await.map(|(status, _)| status)
}

/// Reads one HTTP/1.1 response with a `Content-Length` body: (status, body).
async fn read_response(stream: &mut TcpStream) -> std::io::Result<(u16, Vec<u8>)> {
    let mut received = Vec::with_capacity(1024);
    let mut buffer = [0u8; 4096];
    let invalid = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad response");
    let end = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        received.extend_from_slice(&buffer[..n]);
    };
    let head = std::str::from_utf8(&received[..end]).map_err(|_| invalid())?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(invalid)?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = received[end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&buffer[..n]);
    }
    Ok((status, body))
}

/// Waits until the peer closes `stream` (EOF or error), up to `limit`; the time from `since`.
async fn time_to_close(
    stream: &mut TcpStream,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    let mut buffer = [0u8; 1024];
    let closed = tokio::time::timeout(limit.saturating_sub(since.elapsed()), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    closed.ok().map(|()| since.elapsed())
}

/// Opens `n` connections to `addr`, at most 200 connecting at once; each runs `behave` on its
/// stream and reports when keygate closed it (`None`: still open at `limit`).
async fn hostile<F, Fut>(
    addr: SocketAddr,
    n: usize,
    limit: Duration,
    behave: F,
) -> (Vec<Duration>, usize, usize)
where
    F: Fn(TcpStream, Instant, Duration) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Option<Duration>> + Send,
{
    let gate = Arc::new(Semaphore::new(200));
    let mut tasks = JoinSet::new();
    let mut refused = 0;
    for _ in 0..n {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let behave = behave.clone();
        tasks.spawn(async move {
            let connected = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
                .await
                .ok()
                .and_then(Result::ok);
            drop(permit);
            let stream = connected?;
            Some(behave(stream, Instant::now(), limit).await)
        });
    }
    let mut closed = Vec::new();
    let mut held = 0;
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            None => refused += 1,
            Some(Some(d)) => closed.push(d),
            Some(None) => held += 1,
        }
    }
    closed.sort();
    (closed, held, refused)
}

fn close_report(name: &str, (closed, held, refused): &(Vec<Duration>, usize, usize)) {
    println!(
        "{name}: {} closed by keygate (p50 {}, min {}, max {}), {held} still open at the limit, {refused} could not connect",
        closed.len(),
        secs(percentile(closed, 0.5)),
        secs(closed.first().copied().unwrap_or_default()),
        secs(closed.last().copied().unwrap_or_default()),
    );
}

// === scenarios ===

async fn silent(args: &Args, target: &Target) {
    let probe = Probe::start(target.addr, get_path());
    let rss = Arc::new(tokio::sync::Notify::new());
    let opened = Arc::new(AtomicU64::new(0));
    let n = args.hostile;
    let (rss_kib, result) = {
        let counter = opened.clone();
        let notify = rss.clone();
        let run = hostile(target.addr, n, args.max_wait, move |mut s, since, limit| {
            let counter = counter.clone();
            let notify = notify.clone();
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) + 1 == n as u64 {
                    notify.notify_one();
                }
                time_to_close(&mut s, since, limit).await
            }
        });
        tokio::pin!(run);
        let rss_kib = tokio::select! {
            () = rss.notified() => {
                // Every connection is open: give keygate a moment to accept them all.
                tokio::time::sleep(Duration::from_millis(300)).await;
                target.rss_kib()
            }
            _ = &mut run => None,
        };
        (rss_kib, run.await)
    };
    close_report(&format!("silent ({n})"), &result);
    println!(
        "  RSS with them open: {}; {}",
        mib(rss_kib),
        probe.report().await
    );
}

async fn slow_h1(args: &Args, target: &Target) {
    let probe = Probe::start(target.addr, get_path());
    let result = hostile(
        target.addr,
        args.hostile,
        args.max_wait,
        |mut s, since, limit| async move {
            let _ = s.write_all(b"GET /org/v2/environments HTTP/1.1\r\n").await;
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let mut buffer = [0u8; 256];
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if s.write_all(b"X-Drip: 1\r\n").await.is_err() {
                            return Some(since.elapsed());
                        }
                    }
                    read = s.read(&mut buffer) => match read {
                        Ok(0) | Err(_) => return Some(since.elapsed()),
                        Ok(_) => {}
                    },
                    () = tokio::time::sleep(limit.saturating_sub(since.elapsed())) => return None,
                }
            }
        },
    )
    .await;
    close_report(
        &format!("slow-h1 (a header line per 500 ms, {})", args.hostile),
        &result,
    );
    println!("  {}", probe.report().await);
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const H2_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

async fn slow_h2(args: &Args, target: &Target) {
    let probe = Probe::start(target.addr, get_path());
    let result = hostile(
        target.addr,
        args.hostile,
        args.max_wait,
        |mut s, since, limit| async move {
            let mut buffer = [0u8; 256];
            for byte in H2_PREFACE {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    read = s.read(&mut buffer) => match read {
                        Ok(0) | Err(_) => return Some(since.elapsed()),
                        Ok(_) => {}
                    },
                }
                if since.elapsed() >= limit {
                    return None;
                }
                if s.write_all(&[*byte]).await.is_err() {
                    return Some(since.elapsed());
                }
            }
            time_to_close(&mut s, since, limit).await
        },
    )
    .await;
    close_report(
        &format!("slow-h2 preface (a byte per 200 ms, {})", args.hostile),
        &result,
    );
    let result = hostile(
        target.addr,
        args.hostile,
        args.max_wait,
        |mut s, since, limit| async move {
            let _ = s.write_all(H2_PREFACE).await;
            let _ = s.write_all(H2_SETTINGS).await;
            time_to_close(&mut s, since, limit).await
        },
    )
    .await;
    close_report(
        &format!("slow-h2 preface + SETTINGS, no request ({})", args.hostile),
        &result,
    );
    println!("  {}", probe.report().await);
}

async fn slow_tls(args: &Args, tls: &Target, plain: &Target) {
    let probe = Probe::start(plain.addr, get_path());
    // The record header and the start of a ClientHello; the rest never comes.
    const PARTIAL_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03];
    let result = hostile(
        tls.addr,
        args.hostile,
        args.max_wait,
        |mut s, since, limit| async move {
            let _ = s.write_all(PARTIAL_HELLO).await;
            time_to_close(&mut s, since, limit).await
        },
    )
    .await;
    close_report(
        &format!("slow-tls (10 bytes of a ClientHello, {})", args.hostile),
        &result,
    );
    let result = hostile(
        tls.addr,
        args.hostile,
        args.max_wait,
        |mut s, since, limit| async move { time_to_close(&mut s, since, limit).await },
    )
    .await;
    close_report(&format!("slow-tls (silent, {})", args.hostile), &result);
    println!(
        "  TLS keygate RSS {}; (plain keygate) {}",
        mib(tls.rss_kib()),
        probe.report().await
    );
}

async fn idle(args: &Args, target: &Target) {
    let before = target.rss_kib();
    let connections = open_idle_h1(target.addr, args.idle).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fresh = target.rss_kib();
    let probe = Probe::start(target.addr, get_path());
    // Long enough for keygate to shed the buffers of idle connections.
    tokio::time::sleep(args.settle.saturating_sub(Duration::from_millis(500))).await;
    let settled = target.rss_kib();
    let open = connections.iter().filter(|s| still_open(s)).count();
    let per = |after: Option<u64>, n: usize| match (before, after) {
        (Some(b), Some(a)) if n > 0 => {
            format!("{:.1} KiB each", a.saturating_sub(b) as f64 / n as f64)
        }
        _ => "n/a".into(),
    };
    println!(
        "idle HTTP/1.1 keep-alive: {} opened; RSS {} -> {} after 0.5 s ({}), {} after {:?} with {open} still open ({}); {}",
        connections.len(),
        mib(before),
        mib(fresh),
        per(fresh, connections.len()),
        mib(settled),
        args.settle,
        per(settled, open),
        probe.report().await
    );
    drop(connections);
    if args.idle_h2 == 0 {
        return;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = target.rss_kib();
    let h2 = open_idle_h2(target.addr, args.idle_h2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = target.rss_kib();
    let per = match (before, after) {
        (Some(b), Some(a)) if !h2.is_empty() => format!(
            "{:.1} KiB each",
            (a.saturating_sub(b)) as f64 / h2.len() as f64
        ),
        _ => "n/a".into(),
    };
    println!(
        "idle h2c: {} open; RSS {} -> {} ({per})",
        h2.len(),
        mib(before),
        mib(after)
    );
}

/// Whether keygate still holds `stream` open (nothing to read and no EOF).
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

async fn open_idle_h1(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let gate = Arc::new(Semaphore::new(200));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let permit = gate.clone().acquire_owned().await.unwrap();
        tasks.spawn(async move {
            let _permit = permit;
            let mut stream = TcpStream::connect(addr).await.ok()?;
            match http1_get(&mut stream, get_path(), true).await {
                Ok(200) => Some(stream),
                _ => None,
            }
        });
    }
    let mut open = Vec::with_capacity(n);
    while let Some(result) = tasks.join_next().await {
        if let Ok(Some(stream)) = result {
            open.push(stream);
        }
    }
    open
}

/// Frame header: length, type, flags, stream id.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// `GET path` on stream 1 in HPACK without Huffman: `:method GET`, `:scheme http` (static
/// table), `:path` and `:authority` as literals with an indexed name.
fn h2_get(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x44, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x41, 7]);
    block.extend_from_slice(b"keygate");
    h2_frame(1, 0x5, 1, &block)
}

/// Opens `n` h2c connections that each make one request and then stay open, answering SETTINGS
/// and PINGs. Returns the tasks holding them (aborted when dropped).
async fn open_idle_h2(addr: SocketAddr, n: usize) -> JoinSet<()> {
    let gate = Arc::new(Semaphore::new(200));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let done = done.clone();
        tasks.spawn(async move {
            let Ok(mut stream) = TcpStream::connect(addr).await else {
                return;
            };
            let mut out = H2_PREFACE.to_vec();
            out.extend_from_slice(H2_SETTINGS);
            out.extend_from_slice(&h2_get(get_path()));
            if stream.write_all(&out).await.is_err() {
                return;
            }
            let mut permit = Some(permit);
            let mut header = [0u8; 9];
            let mut payload = vec![0u8; 16_384];
            loop {
                if stream.read_exact(&mut header).await.is_err() {
                    return;
                }
                let len = (usize::from(header[0]) << 16)
                    | (usize::from(header[1]) << 8)
                    | usize::from(header[2]);
                if len > payload.len() || stream.read_exact(&mut payload[..len]).await.is_err() {
                    return;
                }
                let (kind, flags) = (header[3], header[4]);
                let reply = match (kind, flags & 1) {
                    (4, 0) => Some(h2_frame(4, 1, 0, &[])),
                    (6, 0) => Some(h2_frame(6, 1, 0, &payload[..len])),
                    _ => None,
                };
                if let Some(reply) = reply {
                    if stream.write_all(&reply).await.is_err() {
                        return;
                    }
                }
                // END_STREAM on the response: the request is done, the connection stays.
                if (kind == 0 || kind == 1) && flags & 1 == 1 && permit.take().is_some() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while (done.load(Ordering::Relaxed) as usize) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tasks
}

async fn stalled_body(args: &Args, target: &Target) {
    let audit = target.audit.clone().unwrap();
    let n = args.creates;
    // Creates whose body stalls; the caller waits.
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let addr = target.addr;
        tasks.spawn(async move {
            let started = Instant::now();
            let id = format!("stress-wait-{i}");
            let answer = tokio::time::timeout(Duration::from_secs(30), create(addr, &id, None))
                .await
                .ok()
                .and_then(Result::ok);
            (answer, started.elapsed())
        });
    }
    let mut times = Vec::new();
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(result) = tasks.join_next().await {
        let (status, took) = result.unwrap();
        *statuses.entry(status).or_insert(0) += 1;
        times.push(took);
    }
    times.sort();
    println!(
        "stalled create body, caller waits ({n}): answers {statuses:?} after p50 {} max {}",
        secs(percentile(&times, 0.5)),
        secs(times.last().copied().unwrap_or_default())
    );
    // Creates whose body stalls; the caller hangs up after 200 ms.
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let addr = target.addr;
        tasks.spawn(async move {
            let id = format!("stress-gone-{i}");
            let _ = create(addr, &id, Some(Duration::from_millis(200))).await;
        });
    }
    while tasks.join_next().await.is_some() {}
    let deadline = Instant::now() + args.max_wait;
    let counts = loop {
        let counts = count_audit(&audit);
        if counts.complete_wait + counts.complete_gone >= 2 * n || Instant::now() >= deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let AuditCounts {
        received,
        complete_wait,
        complete_gone,
        outcomes,
    } = counts;
    println!(
        "  audit: {received} request_received, response_complete for {complete_wait}/{n} waiting and {complete_gone}/{n} gone callers; outcomes {outcomes:?}"
    );
    // Ungoverned streams that stall after the first chunk.
    let result = hostile(
        target.addr,
        n,
        args.max_wait,
        |mut s, since, limit| async move {
            let request = "GET /stall-stream HTTP/1.1\r\nHost: keygate\r\n\r\n";
            if s.write_all(request.as_bytes()).await.is_err() {
                return Some(since.elapsed());
            }
            time_to_close(&mut s, since, limit).await
        },
    )
    .await;
    close_report(
        &format!("stalled ungoverned stream ({n}): downstream aborted"),
        &result,
    );
}

#[derive(Debug, Default)]
struct AuditCounts {
    received: usize,
    complete_wait: usize,
    complete_gone: usize,
    outcomes: std::collections::BTreeMap<String, usize>,
}

/// Counts the stalled-body scenario's records in the audit file.
fn count_audit(audit: &Path) -> AuditCounts {
    let text = std::fs::read_to_string(audit).unwrap_or_default();
    let mut counts = AuditCounts::default();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let data = &event["data"];
        let id = data["requestId"].as_str().unwrap_or("");
        if !id.starts_with("stress-") {
            continue;
        }
        match data["stage"].as_str() {
            Some("request_received") => counts.received += 1,
            Some("response_complete") => {
                if id.starts_with("stress-wait-") {
                    counts.complete_wait += 1;
                } else {
                    counts.complete_gone += 1;
                }
                let outcome = data["outcome"].as_str().unwrap_or("-").to_string();
                *counts.outcomes.entry(outcome).or_insert(0) += 1;
            }
            _ => {}
        }
    }
    counts
}

/// Sends a create whose upstream body stalls; with `hang_up`, drops the connection after that
/// long. Returns the status keygate answered with.
async fn create(addr: SocketAddr, id: &str, hang_up: Option<Duration>) -> std::io::Result<u16> {
    let body = r#"{"spec":{"owner":{"id":"sa-orders"},"resource":{"id":"lkc-prod01"}}}"#;
    let request = format!(
        "POST /iam/v2/api-keys HTTP/1.1\r\nHost: keygate\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Request-Id: {id}\r\n{STALL}: 1\r\nConnection: close\r\n\r\n{body}",
        basic(),
        body.len()
    );
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request.as_bytes()).await?;
    match hang_up {
        Some(after) => {
            tokio::time::sleep(after).await;
            Ok(0)
        }
        None => read_response(&mut stream).await.map(|(status, _)| status),
    }
}

async fn flood(target: &Target) {
    let probe = Probe::start(target.addr, get_path());
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..64 {
        let (stop, served, addr) = (stop.clone(), served.clone(), target.addr);
        tasks.spawn(async move {
            let Ok(mut stream) = TcpStream::connect(addr).await else {
                return;
            };
            while !stop.load(Ordering::Relaxed) {
                match http1_get(&mut stream, get_path(), true).await {
                    Ok(200) => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => return,
                }
            }
        });
    }
    let duration = Duration::from_secs(5);
    tokio::time::sleep(duration).await;
    let rss = target.rss_kib();
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    println!(
        "request flood (64 keep-alive clients, 5 s): {:.0} requests/s; RSS {}; {}",
        served.load(Ordering::Relaxed) as f64 / duration.as_secs_f64(),
        mib(rss),
        probe.report().await
    );
}

async fn conn_flood(args: &Args, target: &Target) {
    let probe = Probe::start(target.addr, get_path());
    let admin = target.admin.map(|admin| Probe::start(admin, "/healthz"));
    let result = hostile(
        target.addr,
        args.hostile,
        args.max_wait.min(Duration::from_secs(5)),
        |mut s, since, limit| async move { time_to_close(&mut s, since, limit).await },
    )
    .await;
    close_report(
        &format!(
            "conn-flood ({} silent, max_connections {:?})",
            args.hostile, args.max_connections
        ),
        &result,
    );
    println!("  gateway {}", probe.report().await);
    if let Some(admin) = admin {
        println!("  admin {}", admin.report().await);
    }
}
