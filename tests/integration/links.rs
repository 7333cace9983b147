//! Upstream links lead back through keygate: the simulator writes absolute links to its own
//! address (as Confluent writes `https://api.confluent.cloud`), and a client that only ever
//! follows the links it is given — `Location`, `metadata.self`, `metadata.next` — stays on
//! keygate, where every request is decided and audited.

use std::collections::HashSet;
use std::path::PathBuf;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::support::binary;
use crate::support::governed::{self, audit_records};
use crate::support::sim::Sim;
use crate::support::{self, within, Collected};

struct Setup {
    sim: Sim,
    gw: keygate::Gateway,
    base: String,
    audit: PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup(adjust: impl FnOnce(&mut keygate::config::Config)) -> Setup {
    let sim = Sim::start().await;
    // Links name the upstream itself, as in production.
    sim.sim.set_public_base(&sim.url());
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let mut config = support::config(&sim.url(), &format!("[audit]\nfile = {audit:?}\n"));
    adjust(&mut config);
    let gw = support::start(config).await;
    let base = format!("http://{}", gw.local_addr());
    Setup {
        sim,
        gw,
        base,
        audit,
        _dir: dir,
    }
}

/// Every string in `value` that is an absolute URL.
fn absolute_links(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) if s.starts_with("http://") || s.starts_with("https://") => {
            out.push(s.clone());
        }
        Value::Array(items) => items.iter().for_each(|v| absolute_links(v, out)),
        Value::Object(members) => members.values().for_each(|v| absolute_links(v, out)),
        _ => {}
    }
}

/// Asserts that every absolute link of a response (headers and body) points at `base`, and
/// returns how many there were.
fn assert_links_lead_to(response: &Collected, base: &str) -> usize {
    let mut links = Vec::new();
    for name in ["location", "content-location"] {
        if let Some(value) = response.headers.get(name) {
            links.push(value.to_str().unwrap().to_owned());
        }
    }
    if !response.body.is_empty() {
        absolute_links(&response.json(), &mut links);
    }
    for link in &links {
        assert!(
            link.starts_with(&format!("{base}/")) || link == base,
            "link `{link}` leads past keygate ({base})"
        );
    }
    links.len()
}

/// Sends a request to a URL a response gave us, after checking it points at keygate.
async fn follow(method: &str, url: &str, base: &str, auth: &str, body: &str) -> Collected {
    assert!(
        url.starts_with(base),
        "asked to follow `{url}` past keygate"
    );
    let mut request = Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", auth);
    if !body.is_empty() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .unwrap();
    within(10, support::send(&support::client(), request)).await
}

#[tokio::test]
async fn create_get_list_and_delete_follow_links_through_keygate() {
    let s = setup(|_| {}).await;
    let alice = s.sim.basic("u-alice");
    let mut seen_ids = Vec::new();

    // Create: `Location` and every link in the body point at keygate.
    let created = follow(
        "POST",
        &format!("{}/iam/v2/api-keys", s.base),
        &s.base,
        &alice,
        &governed::create_body("sa-orders", Some("lkc-prod01")),
    )
    .await;
    assert_eq!(created.status, 202, "{:?}", created.body);
    assert!(assert_links_lead_to(&created, &s.base) >= 4);
    seen_ids.push(created.headers["x-request-id"].clone());
    let key = created.json();
    let self_link = key["metadata"]["self"].as_str().unwrap().to_owned();
    assert_eq!(created.headers["location"].to_str().unwrap(), self_link);

    // Get through `metadata.self`.
    let got = follow("GET", &self_link, &s.base, &alice, "").await;
    assert_eq!(got.status, 200);
    assert!(assert_links_lead_to(&got, &s.base) >= 3);
    seen_ids.push(got.headers["x-request-id"].clone());

    // List page by page, by `metadata.next` only, to the last page.
    let mut url = format!("{}/iam/v2/api-keys?page_size=2", s.base);
    let mut listed = HashSet::new();
    let mut pages = 0;
    loop {
        let page = follow("GET", &url, &s.base, &alice, "").await;
        assert_eq!(page.status, 200, "{url}");
        assert_links_lead_to(&page, &s.base);
        seen_ids.push(page.headers["x-request-id"].clone());
        pages += 1;
        let page = page.json();
        for key in page["data"].as_array().unwrap() {
            assert!(listed.insert(key["id"].as_str().unwrap().to_owned()));
        }
        match page["metadata"]["next"].as_str() {
            Some(next) if !next.is_empty() => url = next.to_owned(),
            _ => break,
        }
    }
    assert!(pages >= 3, "only {pages} pages");
    assert!(listed.contains(key["id"].as_str().unwrap()));

    // Delete through `metadata.self`, as SDKs do.
    let deleted = follow("DELETE", &self_link, &s.base, &alice, "").await;
    assert_eq!(deleted.status, 204);
    seen_ids.push(deleted.headers["x-request-id"].clone());

    // Every api-keys request the simulator saw came through keygate (it carries the id keygate
    // gave the caller), and each of them has its audit record.
    let forwarded: Vec<_> = s
        .sim
        .received("/iam/v2/api-keys")
        .into_iter()
        .filter(|r| {
            r.header_values("x-request-id")
                .iter()
                .any(|id| seen_ids.iter().any(|seen| seen == id))
        })
        .collect();
    assert_eq!(forwarded.len(), seen_ids.len());
    for id in &seen_ids {
        let records = audit_records(&s.audit, id.to_str().unwrap(), "response_complete").await;
        assert_eq!(records.len(), 1);
    }
    drop(s.gw);
}

#[tokio::test]
async fn the_configured_public_url_is_written_into_links() {
    let s = setup(|c| {
        c.listener.public_url = Some("https://keygate.corp.example".parse().unwrap());
    })
    .await;
    let alice = s.sim.basic("u-alice");
    let created = follow(
        "POST",
        &format!("{}/iam/v2/api-keys", s.base),
        &s.base,
        &alice,
        &governed::create_body("sa-orders", Some("lkc-prod01")),
    )
    .await;
    assert_eq!(created.status, 202);
    assert!(assert_links_lead_to(&created, "https://keygate.corp.example") >= 4);
}

#[tokio::test]
async fn links_stay_as_the_upstream_wrote_them_when_rewriting_is_off() {
    let s = setup(|c| c.upstream.rewrite_links = false).await;
    let alice = s.sim.basic("u-alice");
    let listed = follow(
        "GET",
        &format!("{}/iam/v2/api-keys?page_size=1", s.base),
        &s.base,
        &alice,
        "",
    )
    .await;
    assert_eq!(listed.status, 200);
    assert_links_lead_to(&listed, &s.sim.url());
}

/// Counts `needle` in a stream of frames, including occurrences split across frames.
struct Counter {
    needle: Vec<u8>,
    tail: Vec<u8>,
    count: usize,
}

impl Counter {
    fn feed(&mut self, data: &[u8]) {
        let mut joined = std::mem::take(&mut self.tail);
        joined.extend_from_slice(data);
        self.count += memchr::memmem::find_iter(&joined, &self.needle).count();
        let keep = (self.needle.len() - 1).min(joined.len());
        self.tail = joined[joined.len() - keep..].to_vec();
    }
}

#[tokio::test]
async fn fifty_mib_of_json_links_are_rewritten_as_they_stream_with_flat_memory() {
    const COUNT: u64 = 950_000;
    let sim = Sim::start().await;
    sim.sim.set_public_base(&sim.url());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keygate.toml");
    std::fs::write(
        &config,
        format!(
            "[listener]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n[upstream]\nurl = \"{}\"\n[log]\naccess_log = false\n{}",
            sim.url(),
            support::file_authz_for_file(),
        ),
    )
    .unwrap();
    let keygate = binary::spawn(&["serve", "--config", config.to_str().unwrap()]);
    let (addr, _) = keygate.serve_addresses();
    let base = format!("http://{addr}");

    let fetch = |count: u64| {
        let url = format!("{base}/_simulator/links?count={count}");
        let sim_base = sim.url();
        let base = base.clone();
        async move {
            let response = support::client()
                .request(Request::get(url).body(Full::default()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let mut ours = Counter {
                needle: format!("\"{base}/iam/v2/api-keys/").into_bytes(),
                tail: Vec::new(),
                count: 0,
            };
            let mut theirs = Counter {
                needle: format!("\"{sim_base}/").into_bytes(),
                tail: Vec::new(),
                count: 0,
            };
            let mut body = response.into_body();
            let mut bytes = 0u64;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    bytes += data.len() as u64;
                    ours.feed(&data);
                    theirs.feed(&data);
                }
            }
            (ours.count, theirs.count, bytes)
        }
    };
    // A first, smaller round brings the allocator's caches to their working size.
    let (ours, theirs, _) = within(60, fetch(100_000)).await;
    assert_eq!((ours, theirs), (100_000, 0));
    let baseline = keygate.peak_rss_kib();
    let (ours, theirs, bytes) = within(120, fetch(COUNT)).await;
    assert!(bytes > 50 * 1024 * 1024, "{bytes} bytes");
    assert_eq!(ours, COUNT as usize);
    assert_eq!(theirs, 0);
    let peak = keygate.peak_rss_kib();
    // Buffering the body would add 50 MiB; streaming stays within a few MiB.
    assert!(
        peak < baseline + 16 * 1024,
        "peak RSS grew from {baseline} KiB to {peak} KiB"
    );
}
