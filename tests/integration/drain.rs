//! Graceful shutdown: in-flight requests finish, within the grace period.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tokio::sync::{mpsc, Notify};

use crate::support::{self, upstream, within};

#[tokio::test]
async fn in_flight_request_completes_after_shutdown_starts() {
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<()>();
    let release = Arc::new(Notify::new());
    let handler_release = release.clone();
    let up = upstream::spawn(None, move |_req: Request<hyper::body::Incoming>| {
        let arrived_tx = arrived_tx.clone();
        let release = handler_release.clone();
        async move {
            let _ = arrived_tx.send(());
            release.notified().await;
            Response::new(Full::new(Bytes::from_static(b"finished")))
        }
    })
    .await;
    let gw = support::start(support::config(&format!("http://{up}"), "")).await;
    let url = support::url(gw.local_addr(), "/slow");
    let in_flight = tokio::spawn(async move { support::get(&url).await });
    within(5, arrived.recv()).await.unwrap();

    gw.shutdown();
    let draining = tokio::spawn(gw.wait());
    assert!(!draining.is_finished());
    release.notify_one();

    let response = within(5, in_flight).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(&response.body[..], b"finished");
    within(5, draining).await.unwrap();
}

#[tokio::test]
async fn drain_gives_up_after_the_grace_period() {
    let silent = upstream::silent().await;
    let mut config = support::config(&format!("http://{silent}"), "");
    config.upstream.request_timeout = Duration::from_secs(30);
    config.listener.shutdown_grace = Duration::from_millis(300);
    let gw = support::start(config).await;
    let url = support::url(gw.local_addr(), "/never");
    let _stuck = tokio::spawn(async move { support::get(&url).await });
    // Wait until keygate has the request in flight (the gauge says so), then shut down.
    let metrics_url = support::url(gw.admin_addr(), "/metrics");
    within(5, async {
        loop {
            let m = support::get(&metrics_url).await;
            if String::from_utf8_lossy(&m.body).contains("keygate_in_flight_requests 1") {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let started = Instant::now();
    gw.shutdown();
    within(5, gw.wait()).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}
