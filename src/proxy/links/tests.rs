use super::*;

const UPSTREAM: &str = "https://api.confluent.cloud";
const PUBLIC: &str = "http://keygate.corp:8080";

fn links() -> Arc<Links> {
    let public: Uri = PUBLIC.parse().unwrap();
    Links::new(
        &[UPSTREAM.to_owned()],
        Some(&public),
        "http",
        std::time::Duration::from_secs(10),
    )
}

fn rewrite(text: &str) -> String {
    let out = links()
        .rewrite_all(text.as_bytes(), PUBLIC.as_bytes())
        .unwrap_or_else(|| text.as_bytes().to_vec());
    String::from_utf8(out).unwrap()
}

#[test]
fn every_link_of_the_upstream_origin_is_rewritten() {
    let body = r#"{"metadata":{"self":"https://api.confluent.cloud/iam/v2/api-keys/K1","next":"https://api.confluent.cloud/iam/v2/api-keys?page_token=a"},"related":"https://api.confluent.cloud"}"#;
    assert_eq!(
        rewrite(body),
        r#"{"metadata":{"self":"http://keygate.corp:8080/iam/v2/api-keys/K1","next":"http://keygate.corp:8080/iam/v2/api-keys?page_token=a"},"related":"http://keygate.corp:8080"}"#
    );
}

#[test]
fn an_origin_is_matched_only_when_it_ends() {
    for text in [
        "https://api.confluent.cloud.evil.example/x",
        "https://api.confluent.cloud:8443/x",
        "https://api.confluent.cloudy/x",
        "https://api.confluent.cloud-x/x",
        "https://api.confluent.cloud@evil/x",
        "crn://confluent.cloud/organization=1",
    ] {
        assert_eq!(rewrite(text), text);
    }
    assert_eq!(
        rewrite("see https://api.confluent.cloud?x and https://api.confluent.cloud#y"),
        "see http://keygate.corp:8080?x and http://keygate.corp:8080#y"
    );
}

#[test]
fn text_without_links_is_not_copied() {
    assert!(links().rewrite_all(b"{\"a\":1}", b"x").is_none());
}

#[test]
fn target_is_the_public_url_or_the_request_host() {
    let with_public = links();
    assert_eq!(
        &with_public.target(None, None).unwrap().0[..],
        PUBLIC.as_bytes()
    );
    let by_host = Links::new(
        &[UPSTREAM.to_owned()],
        None,
        "https",
        std::time::Duration::from_secs(10),
    );
    let host = HeaderValue::from_static("gw.example:8443");
    assert_eq!(
        &by_host.target(Some(&host), None).unwrap().0[..],
        b"https://gw.example:8443"
    );
    // The h2 `:authority` (the URI's) wins over a `Host` header.
    assert_eq!(
        &by_host.target(Some(&host), Some("h2.example")).unwrap().0[..],
        b"https://h2.example"
    );
    // A host that is not a plain `host[:port]` is never written into a body.
    let odd = HeaderValue::from_static("x\"},{\"a");
    assert!(by_host.target(Some(&odd), None).is_none());
    assert!(by_host.target(None, None).is_none());
}

/// Feeds `text` in frames cut at `cuts` through the streaming rewriter (as `poll_frame` does,
/// frame by frame, then the end) and returns what comes out.
fn stream(text: &str, cuts: &[usize]) -> String {
    let mut rewriting = Rewriting {
        inner: Body::Empty,
        links: links(),
        target: Bytes::from_static(PUBLIC.as_bytes()),
        carry: BytesMut::new(),
        trailers: None,
        done: false,
    };
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain([text.len()].iter()) {
        let frame = Bytes::copy_from_slice(&text.as_bytes()[start..cut]);
        out.extend_from_slice(&rewriting.process(frame, false));
        start = cut;
    }
    out.extend_from_slice(&rewriting.process(Bytes::new(), true));
    String::from_utf8(out).unwrap()
}

#[test]
fn a_link_split_across_frames_is_rewritten_at_every_cut() {
    let text = r#"{"next":"https://api.confluent.cloud/iam/v2/api-keys?page_token=b","x":"https://api.confluent.cloud.evil/","y":"https://api.confluent.cloud"}"#;
    let expected = rewrite(text);
    assert_ne!(expected, text);
    for cut in 0..=text.len() {
        assert_eq!(stream(text, &[cut]), expected, "cut at {cut}");
    }
    // Every byte its own frame.
    let cuts: Vec<usize> = (1..text.len()).collect();
    assert_eq!(stream(text, &cuts), expected);
}

#[test]
fn a_body_ending_in_a_partial_origin_is_flushed_unchanged() {
    assert_eq!(stream("abc https://api.conf", &[6]), "abc https://api.conf");
}

fn response(content_type: Option<&str>, body: &'static str) -> Response<Body> {
    let mut builder = Response::builder()
        .status(200)
        .header(LOCATION, "https://api.confluent.cloud/iam/v2/api-keys/K1")
        .header(CONTENT_LENGTH, body.len());
    if let Some(content_type) = content_type {
        builder = builder.header(CONTENT_TYPE, content_type);
    }
    builder.body(Body::full(body)).unwrap()
}

async fn rewritten(method: Method, response: Response<Body>) -> (HeaderMap, String, u64) {
    let skipped = prometheus_client::metrics::counter::Counter::default();
    let target = links().target(None, None).unwrap();
    let response = links()
        .rewrite(&method, target, response, &skipped)
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.headers,
        String::from_utf8(bytes.to_vec()).unwrap(),
        skipped.get(),
    )
}

#[tokio::test]
async fn json_bodies_and_location_headers_are_rewritten_with_an_exact_length() {
    let (headers, body, _) = rewritten(
        Method::GET,
        response(
            Some("application/json; charset=utf-8"),
            r#"{"self":"https://api.confluent.cloud/x"}"#,
        ),
    )
    .await;
    assert_eq!(body, r#"{"self":"http://keygate.corp:8080/x"}"#);
    assert_eq!(headers[CONTENT_LENGTH], body.len().to_string());
    assert_eq!(
        headers[LOCATION],
        "http://keygate.corp:8080/iam/v2/api-keys/K1"
    );
    let (_, body, _) = rewritten(
        Method::GET,
        response(
            Some("application/problem+json"),
            r#"{"type":"https://api.confluent.cloud/p"}"#,
        ),
    )
    .await;
    assert_eq!(body, r#"{"type":"http://keygate.corp:8080/p"}"#);
}

#[tokio::test]
async fn other_bodies_head_and_encoded_bodies_are_left_alone() {
    let text = r#"{"self":"https://api.confluent.cloud/x"}"#;
    for content_type in [None, Some("text/plain"), Some("application/jsonl")] {
        let (headers, body, _) = rewritten(Method::GET, response(content_type, text)).await;
        assert_eq!(body, text, "{content_type:?}");
        // The header is still rewritten.
        assert!(headers[LOCATION].to_str().unwrap().starts_with(PUBLIC));
    }
    let (_, body, _) = rewritten(Method::HEAD, response(Some("application/json"), text)).await;
    assert_eq!(body, text);
    let mut encoded = response(Some("application/json"), text);
    encoded
        .headers_mut()
        .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    let (_, body, skipped) = rewritten(Method::GET, encoded).await;
    assert_eq!(body, text);
    assert_eq!(skipped, 1);
}

#[tokio::test]
async fn large_or_chunked_json_streams_without_a_length() {
    let big = format!(
        "[{}\"https://api.confluent.cloud/end\"]",
        "\"https://api.confluent.cloud/x\",".repeat(10_000)
    );
    let big: &'static str = Box::leak(big.into_boxed_str());
    let mut response = response(Some("application/json"), big);
    assert!(big.len() as u64 > BUFFER_LIMIT);
    response.headers_mut().remove(LOCATION);
    let (headers, body, _) = rewritten(Method::GET, response).await;
    assert!(!headers.contains_key(CONTENT_LENGTH));
    assert!(!body.contains("api.confluent.cloud"));
    assert_eq!(body.matches(PUBLIC).count(), 10_001);
}
