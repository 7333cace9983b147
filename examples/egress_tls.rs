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
    let connections: u32 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(500);
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
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
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
