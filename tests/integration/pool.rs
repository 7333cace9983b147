//! The upstream connection pool: keep-alive reuse, connections the upstream closes, responses
//! the caller abandons, and one shared h2 connection over TLS.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::certs::TestPki;
use crate::support::{self, upstream, within};

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let (up, accepted) = upstream::spawn_counted(None, upstream::echo).await;
    let gw = support::start(support::config(&format!("http://{up}"), "")).await;
    for i in 0..10 {
        // A new downstream connection each time: the upstream connection is the pool's.
        let response = within(
            5,
            support::get(&support::url(gw.local_addr(), &format!("/x?i={i}"))),
        )
        .await;
        assert_eq!(response.status, 200);
        assert_eq!(response.json()["path"], format!("/x?i={i}"));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

/// An upstream that answers one request per connection and then closes it, without saying
/// `Connection: close`: each pooled connection is dead by the time it is next wanted.
async fn one_shot_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                // Dropping the stream closes it.
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn connections_the_upstream_closed_are_not_reused() {
    let (up, accepted) = one_shot_upstream().await;
    let gw = support::start(support::config(&format!("http://{up}"), "")).await;
    for _ in 0..20 {
        let response = within(5, support::get(&support::url(gw.local_addr(), "/x"))).await;
        assert_eq!(response.status, 200);
        assert_eq!(&response.body[..], b"ok");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn an_abandoned_response_does_not_poison_the_pool() {
    const LEN: usize = 4 * 1024 * 1024;
    let (up, accepted) = upstream::spawn_counted(None, |_request| async {
        Response::new(Full::new(Bytes::from(vec![b'z'; LEN])))
    })
    .await;
    let gw = support::start(support::config(&format!("http://{up}"), "")).await;

    // Read the head and a first chunk, then drop the whole client (and its connection).
    let client = support::client();
    let response = within(
        5,
        client.request(
            Request::get(support::url(gw.local_addr(), "/big"))
                .body(Full::default())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = within(5, body.frame()).await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);
    drop(client);

    // The half-read upstream connection was not handed to the next request.
    let response = within(10, support::get(&support::url(gw.local_addr(), "/big"))).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), LEN);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_h2_upstream_is_one_shared_connection() {
    let pki = TestPki::new();
    let (up, accepted) = upstream::spawn_counted(Some(pki.server_config()), upstream::echo).await;
    let mut config = support::config(&format!("https://localhost:{}", up.port()), "");
    config.upstream.ca_file = Some(pki.ca_file());
    let gw = support::start(config).await;
    let url = |i: usize| support::url(gw.local_addr(), &format!("/org/v2/environments?i={i}"));

    let first = within(5, support::get(&url(0))).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.json()["version"], "HTTP/2.0");
    // With the connection up, concurrent requests become streams on it.
    let all = within(
        10,
        futures_util::future::join_all((1..=8).map(|i| {
            let url = url(i);
            async move { support::get(&url).await }
        })),
    )
    .await;
    for (i, response) in (1..=8).zip(all) {
        assert_eq!(response.status, 200);
        assert_eq!(
            response.json()["path"],
            format!("/org/v2/environments?i={i}")
        );
        assert_eq!(response.json()["headers"].get("host"), None);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_request_timeout_is_rearmed_for_each_exchange_on_a_pooled_connection() {
    // Each answer takes 60 % of the request timeout, three in a row on one connection: together
    // they outlast one timeout, each alone does not. A timer left armed from an earlier exchange
    // would cut the later ones off.
    let config = support::config("http://127.0.0.1:1", "");
    let delay = config.upstream.request_timeout.mul_f64(0.6);
    let (up, accepted) = upstream::spawn_counted(None, move |_request| async move {
        tokio::time::sleep(delay).await;
        Response::new(Full::new(Bytes::from_static(b"slow")))
    })
    .await;
    let gw = support::start(support::config(&format!("http://{up}"), "")).await;
    for _ in 0..3 {
        let response = within(10, support::get(&support::url(gw.local_addr(), "/x"))).await;
        assert_eq!(response.status, 200);
        assert_eq!(&response.body[..], b"slow");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_pooled_connection_that_stops_answering_is_504_within_the_request_timeout() {
    let (up, accepted) = upstream::spawn_counted(None, |request: Request<_>| async move {
        if request.uri().path() == "/hang" {
            std::future::pending::<()>().await;
        }
        Response::new(Full::new(Bytes::from_static(b"ok")))
    })
    .await;
    let config = support::config(&format!("http://{up}"), "");
    let timeout = config.upstream.request_timeout;
    let gw = support::start(config).await;
    for _ in 0..2 {
        let response = within(5, support::get(&support::url(gw.local_addr(), "/fast"))).await;
        assert_eq!(response.status, 200);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // The pooled connection (its timer armed and re-armed by the exchanges above) now hangs.
    support::get_upstream_timeout(&support::url(gw.local_addr(), "/hang"), timeout).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the hang was on the pooled connection"
    );
    // The abandoned connection is not reused: the next request gets a new one.
    let response = within(5, support::get(&support::url(gw.local_addr(), "/fast"))).await;
    assert_eq!(response.status, 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}
