//! Small test upstreams for transport-level cases (the Confluent simulator covers the API).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Serves `handler` on an already-bound listener (h1 and h2c), optionally over TLS, forever,
/// counting the connections it accepts in `accepted`.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: F,
    accepted: Arc<AtomicUsize>,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        accepted.fetch_add(1, Ordering::SeqCst);
        let handler = handler.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(req).await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            match acceptor {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
            }
        });
    }
}

/// Binds 127.0.0.1:0 and spawns `serve`; returns the bound address.
pub async fn spawn<F, Fut>(tls: Option<Arc<rustls::ServerConfig>>, handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    spawn_counted(tls, handler).await.0
}

/// [`spawn`], also returning the number of connections accepted so far.
pub async fn spawn_counted<F, Fut>(
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: F,
) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    tokio::spawn(serve(listener, tls, handler, Arc::clone(&accepted)));
    (addr, accepted)
}

/// An upstream that accepts connections and reads, but never answers.
pub async fn silent() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// An address where nothing listens: bound, then closed, so connecting is refused.
pub async fn refused() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// A handler that answers with what it received: method, path, headers (as a JSON object of
/// lists) and body length, plus hop-by-hop response headers that keygate must strip.
pub async fn echo(request: Request<Incoming>) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let values: Vec<_> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| serde_json::Value::from(v.to_str().unwrap_or("<bin>")))
            .collect();
        headers.insert(name.to_string(), values.into());
    }
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or(""),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body.len(),
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("connection", "x-upstream-private")
        .header("x-upstream-private", "secret-ish")
        .header("keep-alive", "timeout=5")
        .header("x-ratelimit-limit", "25")
        .header("x-request-id", "upstream-req-1")
        .body(Full::new(Bytes::from(json.to_string())))
        .unwrap()
}
