//! The webhook sink loses nothing: with the collector down across a restart of the real binary,
//! every event of the audit trail arrives once it is back (at least once; the test deduplicates by
//! event id, as receivers do).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio::sync::Notify;

use crate::support::audit::{create_body, read_events};
use crate::support::sim::Sim;
use crate::support::{self, binary, upstream, within};

/// A collector that answers 503 while `down`, and records every event id it took.
struct Collector {
    down: AtomicBool,
    ids: Mutex<HashSet<String>>,
    posts: Mutex<usize>,
    arrived: Notify,
}

async fn collector() -> (Arc<Collector>, std::net::SocketAddr) {
    let state = Arc::new(Collector {
        down: AtomicBool::new(true),
        ids: Mutex::new(HashSet::new()),
        posts: Mutex::new(0),
        arrived: Notify::new(),
    });
    let handler_state = state.clone();
    let addr = upstream::spawn(None, move |request: Request<hyper::body::Incoming>| {
        let state = handler_state.clone();
        async move {
            let body = request.into_body().collect().await.unwrap().to_bytes();
            *state.posts.lock().unwrap() += 1;
            if state.down.load(Ordering::SeqCst) {
                return Response::builder()
                    .status(503)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
            }
            let events: Vec<Value> = serde_json::from_slice(&body).unwrap();
            {
                let mut ids = state.ids.lock().unwrap();
                for event in events {
                    ids.insert(event["id"].as_str().unwrap().to_owned());
                }
            }
            state.arrived.notify_one();
            Response::new(Full::new(Bytes::new()))
        }
    })
    .await;
    (state, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_receiver_down_across_a_restart_every_event_arrives_afterwards() {
    let sim = Sim::start().await;
    let (collector, addr) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let config = dir.path().join("keygate.toml");
    std::fs::write(
        &config,
        format!(
            "[listener]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n\
             [upstream]\nurl = \"{}\"\n[log]\nlevel = \"info\"\naccess_log = false\n{}\n\
             [audit]\nfile = \"{}\"\nwebhook = \"http://{addr}/events\"\n",
            sim.url(),
            support::file_authz_for_file(),
            audit.display()
        ),
    )
    .unwrap();

    let mut keygate = binary::spawn(&["serve", "--config", config.to_str().unwrap()]);
    let (gateway, _) = keygate.serve_addresses();
    let client = support::client();
    for _ in 0..5 {
        let create = Request::post(format!("http://{gateway}/iam/v2/api-keys"))
            .header("authorization", sim.basic("u-alice"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(create_body(
                "sa-orders",
                "lkc-prod01",
            ))))
            .unwrap();
        assert_eq!(within(10, support::send(&client, create)).await.status, 202);
        let list = Request::get(format!("http://{gateway}/iam/v2/api-keys"))
            .header("authorization", sim.basic("u-bob"))
            .body(Full::default())
            .unwrap();
        assert_eq!(within(10, support::send(&client, list)).await.status, 200);
    }
    drop(client);
    // Stopped while the collector is down: what was not delivered stays in the spool.
    keygate.terminate();
    let (status, _, _) = tokio::task::spawn_blocking(move || keygate.finish())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    let first_run: HashSet<String> = read_events(&audit)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        first_run.len(),
        15,
        "three events for each create and list pair"
    );
    assert!(collector.ids.lock().unwrap().is_empty());
    assert!(*collector.posts.lock().unwrap() > 0, "delivery was tried");
    let spool = dir.path().join("audit.jsonl-webhook-spool");
    assert!(std::fs::read_dir(&spool).unwrap().count() > 0);

    // The collector is back; keygate starts again and delivers the spool without any new event.
    collector.down.store(false, Ordering::SeqCst);
    let mut keygate = binary::spawn(&["serve", "--config", config.to_str().unwrap()]);
    keygate.serve_addresses();
    within(30, async {
        while !first_run.is_subset(&collector.ids.lock().unwrap()) {
            collector.arrived.notified().await;
        }
    })
    .await;
    keygate.terminate();
    tokio::task::spawn_blocking(move || keygate.finish())
        .await
        .unwrap();
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);
}
