//! Bodies on both sides of the simulator: reading request bodies frame by frame (counting,
//! optionally hashing, keeping at most a bounded prefix) and the response body type, which is
//! either a buffer or a deterministic byte stream generated on the fly.
//!
//! Nothing here buffers an unbounded amount: a request body beyond the kept prefix is counted and
//! hashed, then dropped; a blob response produces its bytes chunk by chunk from a small pattern.

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use ring::digest;

/// Size of one generated blob chunk: large enough to be cheap per byte, small enough to be
/// irrelevant for memory.
const BLOB_CHUNK: usize = 64 * 1024;
/// The blob pattern period: byte `i` of a blob is `i % 251` (a prime, so chunk boundaries and
/// common buffer sizes never line up with the pattern).
const BLOB_PERIOD: u64 = 251;

/// The byte at `offset` of every `/_simulator/blob` response.
pub(crate) fn blob_byte(offset: u64) -> u8 {
    // INVARIANT: the remainder is below 251, so it fits in a byte.
    u8::try_from(offset % BLOB_PERIOD).unwrap_or(0)
}

/// `BLOB_CHUNK + BLOB_PERIOD` pattern bytes; any chunk is a zero-copy slice of it.
fn pattern() -> &'static Bytes {
    static PATTERN: OnceLock<Bytes> = OnceLock::new();
    PATTERN.get_or_init(|| {
        (0..(BLOB_CHUNK as u64 + BLOB_PERIOD))
            .map(blob_byte)
            .collect::<Vec<u8>>()
            .into()
    })
}

/// The response body of every simulator answer.
pub(crate) struct SimBody(Kind);

enum Kind {
    Full(Option<Bytes>),
    Blob {
        remaining: u64,
        offset: u64,
    },
    /// A repeated text (`pattern` holds it back to back, longer than a chunk), then `tail`.
    Repeat {
        pattern: Bytes,
        head: usize,
        period: usize,
        remaining: u64,
        offset: u64,
        tail: Option<Bytes>,
    },
}

impl SimBody {
    pub(crate) fn empty() -> Self {
        SimBody(Kind::Full(None))
    }

    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            Self::empty()
        } else {
            SimBody(Kind::Full(Some(bytes)))
        }
    }

    /// `len` deterministic bytes (see [`blob_byte`]), generated as they are sent.
    pub(crate) fn blob(len: u64) -> Self {
        SimBody(Kind::Blob {
            remaining: len,
            offset: 0,
        })
    }

    /// `head`, then `item` `count` times, then `tail`, generated as they are sent in chunks that
    /// do not line up with `item` (so anything inside an item is split across chunks somewhere).
    pub(crate) fn repeat(head: &str, item: &str, count: u64, tail: &str) -> Self {
        let copies = BLOB_CHUNK / item.len().max(1) + 2;
        let mut pattern = String::with_capacity(head.len() + item.len() * copies);
        pattern.push_str(head);
        let head_len = head.len();
        for _ in 0..copies {
            pattern.push_str(item);
        }
        SimBody(Kind::Repeat {
            pattern: Bytes::from(pattern),
            head: head_len,
            period: item.len().max(1),
            remaining: head_len as u64 + item.len() as u64 * count,
            offset: 0,
            tail: Some(Bytes::copy_from_slice(tail.as_bytes())).filter(|t| !t.is_empty()),
        })
    }
}

impl fmt::Debug for SimBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SimBody")
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match &mut self.get_mut().0 {
            Kind::Full(bytes) => bytes.take(),
            Kind::Blob { remaining, offset } => {
                if *remaining == 0 {
                    None
                } else {
                    let n = (*remaining).min(BLOB_CHUNK as u64);
                    // INVARIANT: start < 251 and n <= BLOB_CHUNK, so the slice is in bounds.
                    let start = usize::from(blob_byte(*offset));
                    let len = usize::try_from(n).unwrap_or(BLOB_CHUNK);
                    *remaining -= n;
                    *offset += n;
                    Some(pattern().slice(start..start + len))
                }
            }
            Kind::Repeat {
                pattern,
                head,
                period,
                remaining,
                offset,
                tail,
            } => {
                if *remaining == 0 {
                    tail.take()
                } else {
                    // INVARIANT: the pattern holds the head and more than a chunk of items, and
                    // `start` is within the head or the first item.
                    let start = match usize::try_from(*offset).unwrap_or(usize::MAX) {
                        at if at < *head => at,
                        at => *head + (at - *head) % *period,
                    };
                    let len = usize::try_from((*remaining).min(BLOB_CHUNK as u64 - 1))
                        .unwrap_or(BLOB_CHUNK - 1)
                        .min(pattern.len() - start);
                    *remaining -= len as u64;
                    *offset += len as u64;
                    Some(pattern.slice(start..start + len))
                }
            }
        };
        Poll::Ready(frame.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Blob { remaining, .. } => *remaining == 0,
            Kind::Repeat {
                remaining, tail, ..
            } => *remaining == 0 && tail.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Blob { remaining, .. } => SizeHint::with_exact(*remaining),
            Kind::Repeat {
                remaining, tail, ..
            } => SizeHint::with_exact(*remaining + tail.as_ref().map_or(0, |t| t.len() as u64)),
        }
    }
}

/// What reading a request body produced.
pub(crate) struct ReadBody {
    /// The first bytes of the body, at most the `keep` limit given to [`read`].
    pub(crate) kept: Vec<u8>,
    /// The whole body length.
    pub(crate) len: u64,
    /// Whether the body was longer than what was kept.
    pub(crate) truncated: bool,
    /// SHA-256 of the whole body, when asked for.
    pub(crate) sha256: Option<digest::Digest>,
    /// Whether the body ended in an error (e.g. the downstream went away mid-body).
    pub(crate) failed: bool,
}

/// Reads `body` to its end, keeping at most `keep` bytes and hashing everything if `hash`.
pub(crate) async fn read<B>(mut body: B, keep: usize, hash: bool) -> ReadBody
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut out = ReadBody {
        kept: Vec::new(),
        len: 0,
        truncated: false,
        sha256: None,
        failed: false,
    };
    let mut ctx = hash.then(|| digest::Context::new(&digest::SHA256));
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            out.failed = true;
            break;
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        out.len += data.len() as u64;
        if let Some(ctx) = ctx.as_mut() {
            ctx.update(&data);
        }
        let room = keep.saturating_sub(out.kept.len());
        if data.len() > room {
            out.truncated = true;
        }
        out.kept.extend_from_slice(&data[..data.len().min(room)]);
    }
    out.sha256 = ctx.map(digest::Context::finish);
    out
}
