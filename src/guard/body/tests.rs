//! Reading governed bodies: limits, trailers, UTF-8.

use std::cell::Cell;
use std::convert::Infallible;
use std::rc::Rc;

use bytes::Bytes;
use http::StatusCode;
use http_body::Frame;
use http_body_util::{Full, StreamBody};

use crate::guard::*;

use crate::guard::tests::*;

/// A chunked body of `frames` frames of `size` bytes that counts how many frames were pulled.
fn counted_body(
    frames: usize,
    size: usize,
) -> (
    impl http_body::Body<Data = Bytes, Error = Infallible>,
    Rc<Cell<usize>>,
) {
    let pulled = Rc::new(Cell::new(0));
    let counter = Rc::clone(&pulled);
    let chunk = Bytes::from(vec![b' '; size]);
    let stream = futures_util::stream::iter((0..frames).map(move |_| {
        counter.set(counter.get() + 1);
        Ok(Frame::data(chunk.clone()))
    }));
    (StreamBody::new(stream), pulled)
}

#[tokio::test]
async fn single_frame_body_is_returned_without_copying() {
    let original = Bytes::from_static(br#"{"spec":{}}"#);
    let read = read_body(Full::new(original.clone()), Some(11), 1024)
        .await
        .unwrap();
    assert_eq!(read, original);
    assert_eq!(read.as_ptr(), original.as_ptr());
}

#[tokio::test]
async fn multi_frame_body_is_concatenated_up_to_the_limit() {
    let (body, pulled) = counted_body(64, 1024);
    let read = read_body(body, None, 64 * 1024).await.unwrap();
    assert_eq!(read.len(), 64 * 1024);
    assert_eq!(pulled.get(), 64);
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413_without_reading_everything() {
    let (body, pulled) = counted_body(10_000, 1024);
    let error = read_body(body, None, 64 * 1024).await.unwrap_err();
    assert_eq!(error, GuardError::PayloadTooLarge { limit: 64 * 1024 });
    assert_eq!(error.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error.code(), "payload_too_large");
    assert_eq!(pulled.get(), 65, "stops at the first frame past the limit");
}

#[tokio::test]
async fn announced_length_over_the_limit_is_413_before_reading() {
    let (body, pulled) = counted_body(10, 1024);
    let error = read_body(body, Some(1_000_000), 64 * 1024)
        .await
        .unwrap_err();
    assert_eq!(error.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(pulled.get(), 0);

    // The body's own size hint (hyper sets it from Content-Length) counts too.
    let error = read_body(Full::new(Bytes::from(vec![b' '; 2048])), None, 1024)
        .await
        .unwrap_err();
    assert_eq!(error.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn body_read_error_is_400() {
    let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
        Ok(Frame::data(Bytes::from_static(b"{"))),
        Err(std::io::Error::other("connection reset")),
    ];
    let body = StreamBody::new(futures_util::stream::iter(frames));
    let error = read_body(body, None, 1024).await.unwrap_err();
    assert_eq!(error, GuardError::BodyRead);
    assert_eq!(error.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn trailers_are_400() {
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
        Ok(Frame::data(Bytes::from_static(b"{}"))),
        Ok(Frame::trailers(headers(&[(
            "x-http-method-override",
            "DELETE",
        )]))),
    ];
    let body = StreamBody::new(futures_util::stream::iter(frames));
    assert_eq!(read_body(body, None, 1024).await, Err(GuardError::Trailers));
}

#[tokio::test]
async fn invalid_utf8_body_is_400() {
    let body = Full::new(Bytes::from_static(b"{\"spec\":\"\xff\"}"));
    let error = read_body(body, None, 1024).await.unwrap_err();
    assert_eq!(error, GuardError::InvalidUtf8 { offset: 9 });
    assert_eq!(error.status(), StatusCode::BAD_REQUEST);
}
