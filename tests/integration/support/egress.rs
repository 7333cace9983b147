//! Egress-mode helpers: a throwaway CA and the `[egress]` section that uses it, and a client that
//! goes through keygate's forward proxy the way the Confluent CLI does (CONNECT, TLS with SNI,
//! then HTTP/1.1 or h2 as ALPN says).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Collected;

/// The Cloud API host the CLI talks to.
pub const API_HOST: &str = "api.confluent.cloud";
/// Confluent's web host (tunnelled).
pub const WEB_HOST: &str = "confluent.cloud";

/// A CA made for one test, its files, and what trusts it.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub ca_pem: String,
}

/// One CA for every test that only needs some CA (its files under the target's temporary
/// directory).
pub fn shared() -> &'static Pki {
    static SHARED: std::sync::OnceLock<Pki> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| Pki::new_in(tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()))
}

impl Pki {
    pub fn new() -> Pki {
        Pki::new_in(tempfile::tempdir().unwrap())
    }

    fn new_in(dir: tempfile::TempDir) -> Pki {
        let (cert, key) = keygate::egress::certs::generate_ca("keygate egress test CA").unwrap();
        let ca_cert = dir.path().join("egress-ca.pem");
        let ca_key = dir.path().join("egress-ca.key");
        std::fs::write(&ca_cert, &cert).unwrap();
        std::fs::write(&ca_key, &key).unwrap();
        Pki {
            dir,
            ca_cert,
            ca_key,
            ca_pem: cert,
        }
    }

    /// `[egress]` on an ephemeral loopback port with this CA, plus `extra` lines.
    pub fn section(&self, extra: &str) -> String {
        format!(
            "[egress]\naddress = \"127.0.0.1:0\"\nca_cert = {:?}\nca_key = {:?}\n{extra}\n",
            self.ca_cert.display().to_string(),
            self.ca_key.display().to_string()
        )
    }

    /// A rustls server config for `names`, its leaf signed by this CA (a stand-in server).
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let key =
            rcgen::KeyPair::from_pem(&std::fs::read_to_string(&self.ca_key).unwrap()).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&self.ca_pem, key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let leaf = params.signed_by(&leaf_key, &issuer).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(keygate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls_pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
            )
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A client config trusting only this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in keygate::tls::load_certs(&self.ca_cert).unwrap() {
            roots.add(cert).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(keygate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// Sends `CONNECT target` (with extra header lines) and reads the proxy's answer head: (status,
/// the stream, the answer's body if it had one).
pub async fn connect(
    proxy: SocketAddr,
    target: &str,
    extra_headers: &str,
) -> (u16, TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream
        .write_all(
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra_headers}\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    // Read the head byte by byte: nothing past it may be taken from the tunnel.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.unwrap();
        assert!(n > 0, "proxy closed: {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let length: usize = text
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    (status, stream, body)
}

/// A TLS stream through the proxy to `host:443`, with SNI `host`.
pub async fn tls_through(
    proxy: SocketAddr,
    pki: &Pki,
    host: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let (status, stream, _) = connect(proxy, &format!("{host}:443"), "").await;
    assert_eq!(status, 200, "CONNECT {host}:443");
    tokio_rustls::TlsConnector::from(pki.client_config(alpn))
        .connect(ServerName::try_from(host.to_owned()).unwrap(), stream)
        .await
        .unwrap()
}

/// One HTTP connection through the egress proxy, h2 when negotiated.
pub enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Conn {
    /// Opens a connection to `host` through `proxy`; `h2` picks the ALPN offer (h2 alone, as the
    /// CLI's forced HTTP/2, or http/1.1 alone).
    pub async fn open(proxy: SocketAddr, pki: &Pki, host: &str, h2: bool) -> Conn {
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let tls = tls_through(proxy, pki, host, alpn).await;
        let negotiated_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        assert_eq!(negotiated_h2, h2, "ALPN");
        let io = TokioIo::new(tls);
        if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            Conn::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Conn::H1(send)
        }
    }

    /// Sends `request` (its path and headers; the URI's authority is replaced by `host`).
    pub async fn send(&mut self, host: &str, request: Request<Full<Bytes>>) -> Collected {
        let (mut parts, body) = request.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let pq = path_and_query.as_str().to_owned();
        let response: Response<hyper::body::Incoming> = match self {
            Conn::H1(send) => {
                parts.uri = http::Uri::from(path_and_query);
                parts.headers.insert("host", host.parse().unwrap());
                send.ready().await.unwrap();
                send.send_request(Request::from_parts(parts, body))
                    .await
                    .unwrap()
            }
            Conn::H2(send) => {
                parts.uri = http::Uri::builder()
                    .scheme("https")
                    .authority(host)
                    .path_and_query(pq.as_str())
                    .build()
                    .unwrap();
                parts.version = http::Version::HTTP_2;
                parts.headers.remove("host");
                send.ready().await.unwrap();
                send.send_request(Request::from_parts(parts, body))
                    .await
                    .unwrap()
            }
        };
        let (parts, body) = response.into_parts();
        Collected {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }
}

/// Sends one request to the Cloud API host through the egress proxy on a new connection.
pub async fn send(
    proxy: SocketAddr,
    pki: &Pki,
    h2: bool,
    request: Request<Full<Bytes>>,
) -> Collected {
    super::within(10, async {
        let mut conn = Conn::open(proxy, pki, API_HOST, h2).await;
        conn.send(API_HOST, request).await
    })
    .await
}
