//! Bounded whole-body read for governed requests.
//!
//! The body of a governed request is decided on and then forwarded as the *same bytes*, so it is
//! read completely, but never beyond the limit: an announced length over the limit is refused
//! before reading anything, and a chunked body is counted frame by frame and abandoned as soon
//! as it passes the limit. It does not parse JSON (see `json`/`spec`) and does not apply a
//! deadline (the limits layer does).

use std::pin::pin;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;

use super::GuardError;

/// Reads a governed request body whole, up to `limit` bytes.
///
/// `content_length` is the declared length (see [`super::declared_content_length`]); the body's
/// own size hint is honoured too. Errors: 413 when the body is, or announces to be, longer than
/// `limit`; 400 when reading fails, when the body carries trailers, or when it is not UTF-8.
/// A single-frame body is returned without copying.
pub async fn read_body<B>(
    body: B,
    content_length: Option<u64>,
    limit: usize,
) -> Result<Bytes, GuardError>
where
    B: Body,
{
    let too_large = GuardError::PayloadTooLarge { limit };
    let limit_u64 = u64::try_from(limit).unwrap_or(u64::MAX);
    if content_length.is_some_and(|length| length > limit_u64)
        || body.size_hint().lower() > limit_u64
    {
        return Err(too_large);
    }
    let mut body = pin!(body);
    let mut collected = Collected::Empty;
    let mut total: usize = 0;
    while let Some(frame) = body.as_mut().frame().await {
        let frame = frame.map_err(|_| GuardError::BodyRead)?;
        let mut data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) if frame.is_trailers() => return Err(GuardError::Trailers),
            Err(_) => continue,
        };
        let length = data.remaining();
        total = total.saturating_add(length);
        if total > limit {
            return Err(too_large);
        }
        if length > 0 {
            collected = collected.push(data.copy_to_bytes(length));
        }
    }
    let bytes = collected.into_bytes();
    if let Err(error) = std::str::from_utf8(&bytes) {
        return Err(GuardError::InvalidUtf8 {
            offset: error.valid_up_to(),
        });
    }
    Ok(bytes)
}

/// Body bytes so far: one frame is kept as is, more are concatenated.
enum Collected {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Collected {
    fn push(self, chunk: Bytes) -> Self {
        match self {
            Collected::Empty => Collected::One(chunk),
            Collected::One(first) => {
                let mut buffer = BytesMut::with_capacity(first.len() + chunk.len());
                buffer.put(first);
                buffer.put(chunk);
                Collected::Many(buffer)
            }
            Collected::Many(mut buffer) => {
                buffer.put(chunk);
                Collected::Many(buffer)
            }
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Collected::Empty => Bytes::new(),
            Collected::One(bytes) => bytes,
            Collected::Many(buffer) => buffer.freeze(),
        }
    }
}

#[cfg(test)]
mod tests;
