//! Reading the one request head a forward-proxy connection starts with, without reading a byte
//! past it: the bytes that follow belong to the tunnel or to the TLS handshake.
//!
//! The socket is peeked, and only the bytes of the head are consumed (RFC 9112 §2.2: a head ends
//! at the first empty line). Parsing is httparse's, the parser hyper uses.

use http::HeaderValue;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Most header fields a proxy request may carry.
const MAX_HEADERS: usize = 64;

/// The parts of a proxy request head keygate looks at.
#[derive(Debug)]
pub(super) struct Head {
    /// The method, as sent.
    pub method: String,
    /// The request target, as sent (`host:port` for CONNECT).
    pub target: String,
    /// `Proxy-Authorization`, if sent exactly once (sensitive).
    pub proxy_authorization: Option<HeaderValue>,
    /// More than one `Proxy-Authorization` was sent.
    pub duplicate_proxy_authorization: bool,
}

/// Why no head could be read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HeadError {
    /// The peer closed (or reset) before a complete head.
    Closed,
    /// The head is larger than allowed.
    TooLarge,
    /// Not an HTTP/1.x request head.
    Malformed,
}

/// Reads one request head of at most `max` bytes from `stream`, consuming exactly its bytes.
pub(super) async fn read_head(stream: &mut TcpStream, max: usize) -> Result<Head, HeadError> {
    let mut head: Vec<u8> = Vec::with_capacity(512);
    let mut peeked = vec![0u8; 4096];
    loop {
        let n = stream
            .peek(&mut peeked)
            .await
            .map_err(|_| HeadError::Closed)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        // The end may straddle what was consumed before and what is peeked now.
        let from = head.len().saturating_sub(3);
        let before = head.len();
        head.extend_from_slice(&peeked[..n]);
        let end = memchr::memmem::find(&head[from..], b"\r\n\r\n").map(|at| from + at + 4);
        let take = match end {
            Some(end) => end - before,
            None => n,
        };
        head.truncate(before);
        if before + take > max {
            return Err(HeadError::TooLarge);
        }
        let start = head.len();
        head.resize(start + take, 0);
        stream
            .read_exact(&mut head[start..])
            .await
            .map_err(|_| HeadError::Closed)?;
        if end.is_some() {
            return parse(&head);
        }
    }
}

fn parse(bytes: &[u8]) -> Result<Head, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) | Err(_) => return Err(HeadError::Malformed),
    }
    let (Some(method), Some(target)) = (request.method, request.path) else {
        return Err(HeadError::Malformed);
    };
    let mut proxy_authorization = None;
    let mut duplicate_proxy_authorization = false;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("proxy-authorization") {
            if proxy_authorization.is_some() {
                duplicate_proxy_authorization = true;
            }
            let mut value =
                HeaderValue::from_bytes(header.value).map_err(|_| HeadError::Malformed)?;
            value.set_sensitive(true);
            proxy_authorization = Some(value);
        }
    }
    Ok(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        proxy_authorization,
        duplicate_proxy_authorization,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        (listener.accept().await.unwrap().0, client)
    }

    #[tokio::test]
    async fn the_head_is_consumed_and_nothing_after_it() {
        let (mut server, mut client) = pair().await;
        client
            .write_all(b"CONNECT api.confluent.cloud:443 HTTP/1.1\r\nHost: api.confluent.cloud:443\r\nProxy-Authorization: Basic eDp5\r\n\r\n\x16\x03\x01")
            .await
            .unwrap();
        let head = read_head(&mut server, 8192).await.unwrap();
        assert_eq!(head.method, "CONNECT");
        assert_eq!(head.target, "api.confluent.cloud:443");
        assert!(head.proxy_authorization.as_ref().unwrap().is_sensitive());
        let mut rest = [0u8; 3];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"\x16\x03\x01");
    }

    #[tokio::test]
    async fn a_head_split_across_writes_is_read_whole() {
        let (mut server, mut client) = pair().await;
        let writer = tokio::spawn(async move {
            for part in [&b"CONNECT a.example:443 HTTP/1.1\r"[..], b"\n\r", b"\n"] {
                client.write_all(part).await.unwrap();
                client.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        let head = read_head(&mut server, 8192).await.unwrap();
        assert_eq!(head.target, "a.example:443");
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn an_oversized_or_garbled_head_is_refused() {
        let (mut server, mut client) = pair().await;
        client
            .write_all(
                format!("CONNECT a:1 HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(9000)).as_bytes(),
            )
            .await
            .unwrap();
        assert_eq!(
            read_head(&mut server, 8192).await.unwrap_err(),
            HeadError::TooLarge
        );
        let (mut server, mut client) = pair().await;
        client.write_all(b"\x16\x03\x01\x00\r\n\r\n").await.unwrap();
        assert_eq!(
            read_head(&mut server, 8192).await.unwrap_err(),
            HeadError::Malformed
        );
        let (mut server, client) = pair().await;
        drop(client);
        assert_eq!(
            read_head(&mut server, 8192).await.unwrap_err(),
            HeadError::Closed
        );
    }
}
