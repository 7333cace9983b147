//! The floor for issue #2's comparison: the least a hyper-based HTTP/1.1 proxy can do. One
//! worker thread, one upstream connection per downstream connection, bodies streamed, `Host`
//! rewritten, nothing else (no guard, identity, metrics, logs, timeouts, pooling or h2).
//!
//! Not part of keygate; a baseline for `bench/`, next to nginx:
//!
//! ```text
//! cargo build --release --example hyper_floor
//! bench/run.sh -w other,post -T nginx -s hyper-floor=18095='target/release/examples/hyper_floor'
//! ```
//!
//! It reads `LISTEN_ADDR` and `UPSTREAM_URL` (`http://host:port`) as the harness sets them.

use std::sync::Arc;

use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let listen = std::env::var("LISTEN_ADDR")?;
    let upstream: http::Uri = std::env::var("UPSTREAM_URL")?.parse()?;
    let authority = upstream
        .authority()
        .ok_or("UPSTREAM_URL has no authority")?
        .to_string();
    let host = http::HeaderValue::from_str(&authority)?;
    let listener = TcpListener::bind(&listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let authority = authority.clone();
        let host = host.clone();
        tokio::spawn(async move {
            if let Err(err) = proxy_connection(stream, &authority, host).await {
                eprintln!("connection: {err}");
            }
        });
    }
}

async fn proxy_connection(
    stream: TcpStream,
    authority: &str,
    host: http::HeaderValue,
) -> Result<(), BoxError> {
    stream.set_nodelay(true)?;
    let up = TcpStream::connect(authority).await?;
    up.set_nodelay(true)?;
    let (sender, connection) = client::handshake(TokioIo::new(up)).await?;
    tokio::spawn(connection);
    let sender = Arc::new(Mutex::new(sender));
    let service =
        hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            let sender = Arc::clone(&sender);
            let host = host.clone();
            async move {
                request.headers_mut().insert(http::header::HOST, host);
                let mut sender = sender.lock().await;
                // HTTP/1.1 downstream: one exchange at a time, so this waits only for the previous
                // response body to finish.
                sender.ready().await?;
                sender.send_request(request).await
            }
        });
    server::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await?;
    Ok::<(), BoxError>(())
}
