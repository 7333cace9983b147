use std::convert::Infallible;
use std::sync::atomic::AtomicUsize;

use http::Response;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::*;
use crate::audit::tests::{assert_lines_valid, encode, sample_event};
use crate::audit::{Sink, SinkStats};

/// A loopback collector: answers the statuses in `script` in turn (then 200) and forwards every
/// request body it gets.
async fn collector(script: Vec<u16>) -> (Uri, mpsc::UnboundedReceiver<(Bytes, bool)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let script = Arc::new(script);
    let calls = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (tx, script, calls) = (tx.clone(), Arc::clone(&script), Arc::clone(&calls));
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<Incoming>| {
                    let (tx, script, calls) = (tx.clone(), Arc::clone(&script), Arc::clone(&calls));
                    async move {
                        let authorized = req.headers().get(AUTHORIZATION)
                            == Some(&HeaderValue::from_static("Bearer hook-token"));
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let n = calls.fetch_add(1, Ordering::SeqCst);
                        let status = script.get(n).copied().unwrap_or(200);
                        let _ = tx.send((body, authorized));
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from_static(b"{}")))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}/audit").parse().unwrap(), rx)
}

fn test_config(url: Uri) -> WebhookConfig {
    WebhookConfig {
        authorization: Some(Secret::new("Bearer hook-token")),
        max_batch_events: 3,
        max_batch_delay: Duration::from_secs(60),
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        ..WebhookConfig::new(url)
    }
}

fn batch_ids(body: &Bytes) -> Vec<String> {
    let events: Vec<serde_json::Value> = serde_json::from_slice(body).unwrap();
    let lines: String = events.iter().map(|e| format!("{e}\n")).collect();
    assert_lines_valid(&lines);
    events
        .iter()
        .map(|e| e["data"]["requestId"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn delivers_json_array_batches_and_retries_after_a_500() {
    let (url, mut received) = collector(vec![500]).await;
    let sink = WebhookSink::spawn(test_config(url)).unwrap();
    for i in 1..=5 {
        sink.offer(encode(&sample_event(i))).unwrap();
    }
    sink.flush().await;

    let (failed, authorized) = received.recv().await.unwrap();
    assert!(authorized);
    let (retried, _) = received.recv().await.unwrap();
    let (rest, _) = received.recv().await.unwrap();
    assert_eq!(failed, retried, "the retry resends the same batch");
    assert_eq!(batch_ids(&retried), ["req-1", "req-2", "req-3"]);
    assert_eq!(batch_ids(&rest), ["req-4", "req-5"]);
    assert_eq!(
        sink.stats(),
        SinkStats {
            delivered: 5,
            batches: 2,
            retries: 1,
            dropped: 0,
            failed: 0,
            spooled: 0,
        }
    );
}

#[tokio::test]
async fn partial_batch_is_sent_after_the_delay() {
    let (url, mut received) = collector(Vec::new()).await;
    let config = WebhookConfig {
        max_batch_events: 100,
        max_batch_delay: Duration::from_millis(20),
        ..test_config(url)
    };
    let sink = WebhookSink::spawn(config).unwrap();
    sink.offer(encode(&sample_event(1))).unwrap();
    sink.offer(encode(&sample_event(2))).unwrap();
    // No flush: only the batch delay can send this.
    let (body, _) = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch_ids(&body), ["req-1", "req-2"]);
}

#[tokio::test]
async fn refused_batch_is_not_retried_and_is_counted_failed() {
    let (url, mut received) = collector(vec![400]).await;
    let sink = WebhookSink::spawn(test_config(url)).unwrap();
    sink.offer(encode(&sample_event(1))).unwrap();
    sink.flush().await;
    sink.offer(encode(&sample_event(2))).unwrap();
    sink.flush().await;
    let (first, _) = received.recv().await.unwrap();
    let (second, _) = received.recv().await.unwrap();
    assert_eq!(batch_ids(&first), ["req-1"]);
    assert_eq!(batch_ids(&second), ["req-2"]);
    let stats = sink.stats();
    assert_eq!((stats.failed, stats.retries, stats.delivered), (1, 0, 1));
}

/// An address nothing listens on (bound, then released): connects are refused.
async fn refused_address() -> std::net::SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test]
async fn an_absent_collector_keeps_batches_spooled_and_a_full_spool_drops_and_counts() {
    let addr = refused_address().await;
    let config = WebhookConfig {
        queue_capacity: 1,
        // Room for one batch only (a lone batch is always taken).
        spool_max_bytes: 1,
        ..test_config(format!("http://{addr}/").parse().unwrap())
    };
    let sink = WebhookSink::spawn(config).unwrap();
    sink.offer(encode(&sample_event(1))).unwrap();
    sink.flush().await;
    let stats = sink.stats();
    assert_eq!((stats.spooled, stats.failed, stats.delivered), (1, 0, 0));
    assert!(stats.retries >= 1, "{stats:?}");
    // Nothing is given up on: the next flush tries again.
    sink.flush().await;
    assert!(sink.stats().retries >= 2);
    assert_eq!(sink.stats().spooled, 1);

    sink.offer(encode(&sample_event(2))).unwrap();
    sink.flush().await;
    assert_eq!(sink.stats().dropped, 1, "spool full");
    assert_eq!(sink.stats().spooled, 1);

    let mut refused = 0;
    for i in 0..50 {
        if matches!(
            sink.offer(encode(&sample_event(i))),
            Err(AuditError::QueueFull { .. })
        ) {
            refused += 1;
        }
    }
    assert!(refused > 0);
    assert!(
        sink.stats().dropped > refused,
        "the spool drop and the queue drops"
    );
}

#[tokio::test]
async fn spooled_batches_are_delivered_after_a_restart_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let down = refused_address().await;
    {
        let config = WebhookConfig {
            spool_dir: Some(spool.clone()),
            ..test_config(format!("http://{down}/").parse().unwrap())
        };
        let sink = WebhookSink::spawn(config).unwrap();
        for i in 1..=5 {
            sink.offer(encode(&sample_event(i))).unwrap();
        }
        sink.flush().await;
        assert_eq!(sink.stats().spooled, 5);
        // A second keygate cannot use the same spool.
        let again = WebhookSink::spawn(WebhookConfig {
            spool_dir: Some(spool.clone()),
            ..test_config(format!("http://{down}/").parse().unwrap())
        });
        assert!(matches!(again, Err(AuditError::InUse { .. })), "{again:?}");
    }
    let files = std::fs::read_dir(&spool).unwrap().count();
    assert_eq!(files, 2, "two batches of at most 3 events on disk");

    let (url, mut received) = collector(vec![503]).await;
    let config = WebhookConfig {
        spool_dir: Some(spool.clone()),
        ..test_config(url)
    };
    // The first sink's task lets go of the spool's lock when it has ended.
    let sink = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match WebhookSink::spawn(config.clone()) {
                Ok(sink) => break sink,
                Err(AuditError::InUse { .. }) => tokio::task::yield_now().await,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .unwrap();
    // Delivered without a new event: the 503 is retried, then both batches arrive in order.
    let (refused, _) = received.recv().await.unwrap();
    let (first, _) = received.recv().await.unwrap();
    let (second, _) = received.recv().await.unwrap();
    assert_eq!(refused, first);
    assert_eq!(batch_ids(&first), ["req-1", "req-2", "req-3"]);
    assert_eq!(batch_ids(&second), ["req-4", "req-5"]);
    sink.flush().await;
    let stats = sink.stats();
    assert_eq!((stats.delivered, stats.spooled), (5, 0));
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);
}

#[tokio::test]
async fn url_with_credentials_or_bad_scheme_is_rejected_without_echoing_them() {
    let err = WebhookSink::spawn(WebhookConfig::new(
        "https://user:hunter2@collector.example/".parse().unwrap(),
    ))
    .unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(matches!(err, AuditError::Webhook { .. }));
    let err = WebhookSink::spawn(WebhookConfig::new(
        "ftp://collector.example/".parse().unwrap(),
    ))
    .unwrap_err();
    assert!(matches!(err, AuditError::Webhook { .. }));
}

#[test]
fn config_debug_does_not_show_the_authorization_secret() {
    let config = test_config("http://127.0.0.1:1/".parse().unwrap());
    assert!(!format!("{config:?}").contains("hook-token"));
}
