//! What egress mode costs per new connection and at start-up, measured in-process:
//!
//! - leaf minting: the time `InterceptCerts::load` takes per intercepted host with a CA (what
//!   keygate logs as "Egress certificates ready");
//! - a new connection through the egress listener (TCP connect, `CONNECT`, TLS 1.3 handshake with
//!   the minted leaf, one governed `GET /iam/v2/api-keys` over h2) against the same on the
//!   reverse-proxy listener with TLS (no `CONNECT`): wall time and process CPU time per
//!   connection. Client and server share the process, so CPU covers both ends; the difference
//!   between the two is what `CONNECT` and the SNI check add.
//!
//! ```text
//! cargo run --release --example egress_tls [connections]
//! ```
//!
//! With `--keep-alive SECONDS` it then measures what matters for a client that keeps its
//! connection (the CLI, an SDK): **governed creates over kept-alive TLS connections**, through the
//! egress listener (`CONNECT` + TLS) against the reverse-proxy listener with TLS, with the release
//! keygate binary (`KEYGATE_BIN`, default `target/release/keygate`) running as its own process so
//! that only keygate's CPU is counted (`/proc/<pid>/stat`, every thread). keygate runs with one
//! worker thread, pinned to CPU 1 with `taskset` when there is one (run this process on CPU 0:
//! `taskset -c 0 cargo run …`). The upstream is a mock in this process answering the create and the
//! identity lookup as `bench/`'s nginx mock does (and `benches/bench-*.toml` for bindings and
//! inventory). Each round runs both listeners in turn (order alternating) with `--conns`
//! connections (default 32) each sending creates one after the other for SECONDS; the connections
//! are opened (and warmed) before the CPU is read, so handshakes are not counted. Prints req/s and
//! keygate CPU µs per create per round, the egress / reverse-proxy ratio per round and its median.
//!
//! ```text
//! cargo build --release --bin keygate --example egress_tls
//! taskset -c 0 target/release/examples/egress_tls 500 --keep-alive 8 --rounds 5 [--conns 32] [--h1]
//! ```
//!
//! Not part of keygate; for the README's performance figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use keygate::egress::certs::{generate_ca, InterceptCerts};
use keygate::egress::config::{CertSource, Target};
use keygate::simulator::{self, Seed, Simulator};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Process CPU time (user + system), from /proc/self/stat.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11usize, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn client_config(ca: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in keygate::tls::load_certs(ca)? {
        roots.add(cert)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(keygate::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// One new connection: optional CONNECT, TLS, one h2 request; its status.
async fn one(
    addr: std::net::SocketAddr,
    connect: bool,
    host: &str,
    tls: &Arc<rustls::ClientConfig>,
    authorization: &str,
) -> Result<u16, BoxError> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    if connect {
        stream
            .write_all(
                format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n").as_bytes(),
            )
            .await?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await? == 0 {
                return Err("proxy closed".into());
            }
            head.push(byte[0]);
        }
    }
    let tls = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(ServerName::try_from(host.to_owned())?, stream)
        .await?;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let request = Request::get(format!("https://{host}/iam/v2/api-keys"))
        .header("authorization", authorization)
        .body(Full::new(Bytes::new()))?;
    let response = send.send_request(request).await?;
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok(status)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let options = Options::parse()?;
    let connections = options.connections;
    keygate::tls::install_provider();
    let dir = tempfile_dir()?;
    let (ca_pem, ca_key) = generate_ca("egress bench CA")?;
    let ca = dir.join("ca.pem");
    let key = dir.join("ca.key");
    std::fs::write(&ca, ca_pem)?;
    std::fs::write(&key, ca_key)?;
    let source = CertSource::Ca {
        cert: ca.clone(),
        key: key.clone(),
    };

    // Leaf minting.
    let host = Target::parse("api.confluent.cloud:443").ok_or("target")?;
    let rounds = 50;
    let started = Instant::now();
    for _ in 0..rounds {
        InterceptCerts::load(&source, std::slice::from_ref(&host))?;
    }
    let mint = started.elapsed() / rounds;
    println!("leaf minting (CA read, key generated, leaf signed, server config built): {:.2} ms per intercepted host", mint.as_secs_f64() * 1000.0);

    let leaf_dir = dir.join("leaf");
    std::fs::create_dir_all(&leaf_dir)?;
    let (leaf_pem, leaf_key) = leaf_files(&ca, &key, "keygate.bench")?;
    std::fs::write(leaf_dir.join("cert.pem"), leaf_pem)?;
    std::fs::write(leaf_dir.join("key.pem"), leaf_key)?;

    // The simulator as upstream, keygate with both listeners.
    let sim = Arc::new(Simulator::new(Seed::builtin()));
    let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sim_addr = sim_listener.local_addr()?;
    tokio::spawn(simulator::serve(
        sim_listener,
        sim.clone(),
        None,
        std::future::pending(),
    ));
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let config = format!(
        r#"
[listener]
address = "127.0.0.1:0"
[listener.tls]
cert = "{cert}"
key = "{lkey}"
[admin]
address = "127.0.0.1:0"
[upstream]
url = "http://{sim_addr}"
[log]
level = "error"
access_log = false
[authz]
org_id = "4f8c2a1e-6b3d-4e7a-9c5f-1d2e3f4a5b6c"
matrix = "{p}/matrix.toml"
bindings = "{p}/role-bindings.toml"
inventory = "{p}/inventory.toml"
[egress]
address = "127.0.0.1:0"
ca_cert = "{ca}"
ca_key = "{key}"
"#,
        cert = leaf_dir.join("cert.pem").display(),
        lkey = leaf_dir.join("key.pem").display(),
        p = policies.display(),
        ca = ca.display(),
        key = key.display(),
    );
    let config = keygate::config::Config::from_toml(&config)?;
    let gateway = keygate::build(config).await?;
    let egress = gateway.egress_addr().ok_or("no egress listener")?;
    let direct = gateway.local_addr();
    let tls = client_config(&ca)?;
    let bob = sim
        .demo_keys()
        .into_iter()
        .find(|k| k.principal_id == "u-bob")
        .ok_or("bob")?;
    use base64::Engine;
    let authorization = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", bob.key_id, bob.secret))
    );
    for (name, addr, connect, host) in [
        ("reverse-proxy TLS listener", direct, false, "keygate.bench"),
        (
            "egress listener (CONNECT + TLS)",
            egress,
            true,
            "api.confluent.cloud",
        ),
    ] {
        // Warm up (identity cache, pools).
        for _ in 0..20 {
            one(addr, connect, host, &tls, &authorization).await?;
        }
        let wall = Instant::now();
        let cpu_before = cpu();
        for _ in 0..connections {
            let status = one(addr, connect, host, &tls, &authorization).await?;
            if status != 200 {
                return Err(format!("{name}: status {status}").into());
            }
        }
        let wall = wall.elapsed() / connections;
        let cpu = (cpu() - cpu_before) / connections;
        println!(
            "{name}: new connection + one governed GET over h2: {:.3} ms wall, {:.3} ms CPU (both ends) per connection ({connections} connections)",
            wall.as_secs_f64() * 1000.0,
            cpu.as_secs_f64() * 1000.0
        );
    }
    gateway.shutdown();
    gateway.wait().await;
    let result = match options.keep_alive {
        Some(seconds) => keep_alive::run(&options, seconds, &dir, &ca, &key, &leaf_dir).await,
        None => Ok(()),
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The command line: `[connections] [--keep-alive SECONDS] [--rounds N] [--conns N] [--h1]`.
struct Options {
    connections: u32,
    keep_alive: Option<u64>,
    rounds: u32,
    conns: usize,
    h2: bool,
}

impl Options {
    fn parse() -> Result<Options, BoxError> {
        let mut options = Options {
            connections: 500,
            keep_alive: None,
            rounds: 5,
            conns: 32,
            h2: true,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = |name: &str| -> Result<String, BoxError> {
                args.next()
                    .ok_or_else(|| format!("{name} needs a value").into())
            };
            match arg.as_str() {
                "--keep-alive" => options.keep_alive = Some(value("--keep-alive")?.parse()?),
                "--rounds" => options.rounds = value("--rounds")?.parse()?,
                "--conns" => options.conns = value("--conns")?.parse()?,
                "--h1" => options.h2 = false,
                n => options.connections = n.parse()?,
            }
        }
        Ok(options)
    }
}

/// Governed creates over kept-alive TLS connections, egress against the reverse-proxy listener,
/// with keygate in its own process (see the module doc).
mod keep_alive {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls_pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::{BoxError, Options};

    /// The bench caller `ABCDEFGHIJKLMNOP` (owner `u-bench01`), as `bench/` sends it.
    const AUTHORIZATION: &str = "Basic QUJDREVGR0hJSktMTU5PUDpmMEJhQTlSb0NVbG8wRVFGRnlpRVdsN3hiUnBKM3RtS3NuR0xpeXNMODYwamhjd2JieG96SjBWY2x4c0VKWmhk";
    /// `bench/lua/create-api-key.json`.
    const CREATE: &str = include_str!("../bench/lua/create-api-key.json");
    /// The mock's create answer and identity answer (as `bench/conf/upstream-nginx.conf`).
    const CREATED: &str = r#"{"api_version":"iam/v2","kind":"ApiKey","id":"ABCDEFGHIJKLMNOP","metadata":{"self":"https://api.confluent.cloud/iam/v2/api-keys/ABCDEFGHIJKLMNOP","resource_name":"crn://api.confluent.cloud/organization=9bb441c4-edef-46ac-8a41-c49e44a3fd9a/user=sa-12345/api-key=ABCDEFGHIJKLMNOP","created_at":"2024-01-02T15:04:05Z","updated_at":"2024-01-02T15:04:05Z"},"spec":{"secret":"f0BaA9RoCUlo0EQFFyiEWl7xbRpJ3tmKsnGLiysL860jhcwbbxozJ0VclxsEJZhd","display_name":"CI kafka access key","description":"This API key provides kafka access to cluster x","owner":{"id":"sa-12345","related":"https://api.confluent.cloud/iam/v2/service-accounts/sa-12345","kind":"ServiceAccount"},"resource":{"id":"lkc-12345","environment":"env-00000","related":"https://api.confluent.cloud/cmk/v2/clusters/lkc-12345","resource_name":"crn://confluent.cloud/organization=9bb441c4-edef-46ac-8a41-c49e44a3fd9a/environment=env-00000/cloud-cluster=lkc-12345/kafka=lkc-12345","api_version":"cmk/v2","kind":"Cluster"}}}"#;
    const IDENTITY: &str = r#"{"api_version":"iam/v2","kind":"ApiKey","id":"ABCDEFGHIJKLMNOP","metadata":{"self":"https://api.confluent.cloud/iam/v2/api-keys/ABCDEFGHIJKLMNOP","resource_name":"crn://confluent.cloud/organization=9bb441c4-edef-46ac-8a41-c49e44a3fd9a/user=u-bench01/api-key=ABCDEFGHIJKLMNOP","created_at":"2024-01-02T15:04:05Z","updated_at":"2024-01-02T15:04:05Z"},"spec":{"secret":"","display_name":"bench caller","description":"","owner":{"id":"u-bench01","api_version":"iam/v2","kind":"User","related":"https://api.confluent.cloud/iam/v2/users/u-bench01","resource_name":"crn://confluent.cloud/organization=9bb441c4-edef-46ac-8a41-c49e44a3fd9a/user=u-bench01"},"resource":{"id":"cloud","api_version":"iam/v2","kind":"Cloud"}}}"#;

    /// One listener to load: its address, whether a `CONNECT` comes first, the TLS name.
    struct Target {
        name: &'static str,
        addr: SocketAddr,
        connect: bool,
        host: &'static str,
    }

    /// One sender per kept-alive connection.
    enum Sender {
        H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
        H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
    }

    impl Sender {
        async fn create(&mut self, host: &str) -> Result<u16, BoxError> {
            let mut request = Request::post(format!("https://{host}/iam/v2/api-keys"))
                .header("authorization", AUTHORIZATION)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(CREATE.as_bytes())))?;
            let response = match self {
                Sender::H1(send) => {
                    // HTTP/1.1 takes the host from `Host` (hyper's connection API sets none).
                    request
                        .headers_mut()
                        .insert(http::header::HOST, http::HeaderValue::from_str(host)?);
                    send.ready().await?;
                    send.send_request(request).await?
                }
                Sender::H2(send) => {
                    send.ready().await?;
                    send.send_request(request).await?
                }
            };
            let status = response.status().as_u16();
            response.into_body().collect().await?;
            Ok(status)
        }
    }

    /// keygate's CPU time (user + system, every thread) from /proc.
    fn cpu_of(pid: u32) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks: u64 = [11usize, 12]
            .iter()
            .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
            .sum();
        Duration::from_millis(ticks * 10)
    }

    fn free_port() -> Result<SocketAddr, BoxError> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
    }

    /// The mock upstream: creates and identity lookups, `{}` for anything else.
    async fn mock(listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                    let path = request.uri().path().to_owned();
                    let post = request.method() == http::Method::POST;
                    let _ = request.into_body().collect().await;
                    let (status, body) = if post && path == "/iam/v2/api-keys" {
                        (202, CREATED)
                    } else if path.starts_with("/iam/v2/api-keys/") {
                        (200, IDENTITY)
                    } else {
                        (200, "{}")
                    };
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(body.as_bytes())))
                            .unwrap_or_default(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    /// Kills keygate when the measurement ends, whichever way.
    struct Keygate(Child);

    impl Drop for Keygate {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    async fn open(
        target: &Target,
        tls: &Arc<rustls::ClientConfig>,
        h2: bool,
    ) -> Result<Sender, BoxError> {
        let mut stream = TcpStream::connect(target.addr).await?;
        stream.set_nodelay(true)?;
        if target.connect {
            let host = target.host;
            stream
                .write_all(
                    format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n").as_bytes(),
                )
                .await?;
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if stream.read(&mut byte).await? == 0 {
                    return Err("proxy closed".into());
                }
                head.push(byte[0]);
            }
        }
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(ServerName::try_from(target.host.to_owned())?, stream)
            .await?;
        let io = TokioIo::new(stream);
        Ok(if h2 {
            let (send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Sender::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            Sender::H1(send)
        })
    }

    /// `conns` connections sending creates for `seconds`: (creates, keygate CPU, wall).
    async fn load(
        target: &Target,
        tls: &Arc<rustls::ClientConfig>,
        options: &Options,
        seconds: f64,
        pid: u32,
    ) -> Result<(u64, Duration, Duration), BoxError> {
        let mut senders = Vec::with_capacity(options.conns);
        for _ in 0..options.conns {
            let mut sender = open(target, tls, options.h2).await?;
            let status = sender.create(target.host).await?;
            if status != 202 {
                return Err(format!("{}: create answered {status}", target.name).into());
            }
            senders.push(sender);
        }
        let cpu_before = cpu_of(pid);
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(seconds);
        let mut tasks = tokio::task::JoinSet::new();
        for mut sender in senders {
            let host = target.host;
            tasks.spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    match sender.create(host).await {
                        Ok(202) => done += 1,
                        Ok(status) => return Err(format!("create answered {status}")),
                        Err(e) => return Err(e.to_string()),
                    }
                }
                Ok(done)
            });
        }
        let mut creates = 0;
        while let Some(joined) = tasks.join_next().await {
            creates += joined?.map_err(|e| format!("{}: {e}", target.name))?;
        }
        let wall = started.elapsed();
        Ok((creates, cpu_of(pid) - cpu_before, wall))
    }

    pub async fn run(
        options: &Options,
        seconds: u64,
        dir: &Path,
        ca: &Path,
        key: &Path,
        leaf_dir: &Path,
    ) -> Result<(), BoxError> {
        let upstream = TcpListener::bind("127.0.0.1:0").await?;
        let upstream_addr = upstream.local_addr()?;
        tokio::spawn(mock(upstream));
        let (listen, egress, admin) = (free_port()?, free_port()?, free_port()?);
        let benches = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches");
        let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let config = format!(
            r#"
[runtime]
worker_threads = 1
[listener]
address = "{listen}"
[listener.tls]
cert = "{cert}"
key = "{lkey}"
[admin]
address = "{admin}"
[upstream]
url = "http://{upstream_addr}"
[log]
level = "error"
access_log = false
[authz]
org_id = "9bb441c4-edef-46ac-8a41-c49e44a3fd9a"
matrix = "{p}/matrix.toml"
bindings = "{b}/bench-role-bindings.toml"
inventory = "{b}/bench-inventory.toml"
[egress]
address = "{egress}"
ca_cert = "{ca}"
ca_key = "{key}"
"#,
            cert = leaf_dir.join("cert.pem").display(),
            lkey = leaf_dir.join("key.pem").display(),
            p = policies.display(),
            b = benches.display(),
            ca = ca.display(),
            key = key.display(),
        );
        let config_path = dir.join("keygate-keep-alive.toml");
        std::fs::write(&config_path, config)?;
        let binary = std::env::var("KEYGATE_BIN").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/keygate").to_owned()
        });
        let taskset = Command::new("taskset")
            .arg("-V")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let mut command = if taskset {
            let mut c = Command::new("taskset");
            c.args(["-c", "1", &binary]);
            c
        } else {
            Command::new(&binary)
        };
        let child = command
            .args(["serve", "--config"])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        // taskset execs keygate: the child's pid is keygate's.
        let keygate = Keygate(child);
        let pid = keygate.0.id();
        for addr in [listen, egress] {
            let started = Instant::now();
            while TcpStream::connect(addr).await.is_err() {
                if started.elapsed() > Duration::from_secs(20) {
                    return Err(format!("keygate did not listen on {addr}").into());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let mut tls = (*super::client_config(ca)?).clone();
        tls.alpn_protocols = vec![if options.h2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        let tls = Arc::new(tls);
        let targets = [
            Target {
                name: "reverse-proxy TLS listener",
                addr: listen,
                connect: false,
                host: "keygate.bench",
            },
            Target {
                name: "egress listener (CONNECT + TLS)",
                addr: egress,
                connect: true,
                host: "api.confluent.cloud",
            },
        ];
        println!(
            "keep-alive governed creates: keygate pid {pid}{}, {} connections over {}, {} rounds x {seconds} s",
            if taskset { " on CPU 1" } else { "" },
            options.conns,
            if options.h2 { "h2" } else { "HTTP/1.1" },
            options.rounds
        );
        for target in &targets {
            load(target, &tls, options, 2.0, pid).await?;
        }
        let mut ratios = Vec::new();
        for round in 1..=options.rounds {
            let order: [usize; 2] = if round % 2 == 1 { [0, 1] } else { [1, 0] };
            let mut per_request = [0f64; 2];
            for i in order {
                let (creates, cpu, wall) =
                    load(&targets[i], &tls, options, seconds as f64, pid).await?;
                per_request[i] = cpu.as_secs_f64() * 1e6 / creates.max(1) as f64;
                println!(
                    "round {round} {:<32} {:>8.0} creates/s  keygate CPU {:>6.1} µs/create ({creates} creates, {:.2} s CPU)",
                    targets[i].name,
                    creates as f64 / wall.as_secs_f64(),
                    per_request[i],
                    cpu.as_secs_f64()
                );
            }
            let ratio = per_request[1] / per_request[0];
            println!("round {round} egress / reverse-proxy CPU per create: {ratio:.3}");
            ratios.push(ratio);
        }
        ratios.sort_by(f64::total_cmp);
        println!(
            "egress / reverse-proxy keygate CPU per create: median {:.3} (min {:.3}, max {:.3}) over {} rounds",
            ratios[ratios.len() / 2],
            ratios[0],
            ratios[ratios.len() - 1],
            ratios.len()
        );
        drop(keygate);
        Ok(())
    }
}

fn tempfile_dir() -> Result<std::path::PathBuf, BoxError> {
    let dir = std::env::temp_dir().join(format!("keygate-egress-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A PEM leaf for `name` signed by the CA files, and its key.
fn leaf_files(
    ca: &std::path::Path,
    key: &std::path::Path,
    name: &str,
) -> Result<(String, String), BoxError> {
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(key)?)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&std::fs::read_to_string(ca)?, ca_key)?;
    let leaf_key = rcgen::KeyPair::generate()?;
    let leaf =
        rcgen::CertificateParams::new(vec![name.to_owned()])?.signed_by(&leaf_key, &issuer)?;
    Ok((leaf.pem(), leaf_key.serialize_pem()))
}
