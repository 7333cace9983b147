//! Query strings, pagination (`page_size`, opaque `page_token`, absolute `first`/`next` links) and
//! the lenient path reading of the simulator's attacker-friendly mode.

use super::*;

/// Decoded query parameters, in order; the first occurrence of a name wins.
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    pub(super) fn parse(raw: Option<&str>) -> Self {
        let pairs = raw
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        Query(pairs)
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The segments a lenient stack routes on: the reading of `keygate::guard::lenient` that is a
/// governed path if there is one (else the first), with the fixed prefix segments lowercased.
pub(super) fn lenient_segments(path: &str) -> Vec<String> {
    let model = crate::guard::lenient::read(path.as_bytes());
    let prefix: [&[u8]; 3] = [b"iam", b"v2", b"api-keys"];
    let readings = model.readings();
    let reading = readings
        .iter()
        .find(|r| r.len() >= 3 && r.iter().zip(prefix).all(|(s, p)| s.eq_ignore_ascii_case(p)))
        .or(readings.first());
    reading
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(at, segment)| {
            let text = String::from_utf8_lossy(segment);
            if at < 3 {
                text.to_ascii_lowercase()
            } else {
                text.into_owned()
            }
        })
        .collect()
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, bad escapes stay literal.
pub(super) fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Everything but RFC 3986 unreserved characters.
const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(super) fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}

/// One page of a list, with the `metadata` block Confluent sends (absolute `first`/`next`).
pub(super) struct Listing<'a> {
    pub(super) path: &'a str,
    pub(super) api_version: &'a str,
    pub(super) kind: &'a str,
    /// The filters the caller gave, repeated in the links.
    pub(super) filters: Vec<(&'a str, &'a str)>,
}

impl Listing<'_> {
    /// Renders the page the caller asked for; `items` are `(id, object)` sorted by id.
    pub(super) fn respond<T>(
        &self,
        call: &Call<'_>,
        items: &[(&str, T)],
        render: impl Fn(&T) -> Value,
    ) -> Result<Response<SimBody>, ApiError> {
        let (page_size, after) = self.page_request(call)?;
        // Keyset pagination: a page starts after the last id of the previous one, so objects
        // created or deleted between pages neither repeat nor vanish.
        let start = after.map_or(0, |after| {
            items.partition_point(|(id, _)| *id <= after.as_str())
        });
        let end = (start + page_size).min(items.len());
        Ok(self.render_page(
            call,
            &items[start..end],
            items.len(),
            end < items.len(),
            render,
        ))
    }

    /// `page_size` (validated) and the id the page starts after (from `page_token`).
    pub(super) fn page_request(
        &self,
        call: &Call<'_>,
    ) -> Result<(usize, Option<String>), ApiError> {
        let page_size = match call.query.get("page_size") {
            None => DEFAULT_PAGE_SIZE,
            Some(raw) => raw
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid_filter(
                        "page_size",
                        format!("page_size must be between 1 and {MAX_PAGE_SIZE}"),
                    )
                })?,
        };
        let after = match call.query.get("page_token") {
            None => None,
            Some(token) => Some(decode_page_token(token).ok_or_else(|| {
                ApiError::invalid_filter("page_token", "page_token is not valid")
            })?),
        };
        Ok((page_size, after))
    }

    /// One page: `page` of `total` items, with a `next` link when `more` follow.
    pub(super) fn render_page<T>(
        &self,
        call: &Call<'_>,
        page: &[(&str, T)],
        total: usize,
        more: bool,
        render: impl Fn(&T) -> Value,
    ) -> Response<SimBody> {
        let mut metadata = json!({
            "first": self.link(call, None),
            "total_size": total,
        });
        if more {
            if let (Some((last, _)), Some(obj)) = (page.last(), metadata.as_object_mut()) {
                let token = URL_SAFE_NO_PAD.encode(last.as_bytes());
                obj.insert("next".to_owned(), json!(self.link(call, Some(&token))));
            }
        }
        let data: Vec<Value> = page.iter().map(|(_, item)| render(item)).collect();
        json_response(
            StatusCode::OK,
            &json!({
                "api_version": self.api_version,
                "kind": self.kind,
                "metadata": metadata,
                "data": data,
            }),
        )
    }

    pub(super) fn link(&self, call: &Call<'_>, token: Option<&str>) -> String {
        let mut pairs: Vec<(&str, &str)> = self.filters.clone();
        if let Some(size) = call.query.get("page_size") {
            pairs.push(("page_size", size));
        }
        if let Some(token) = token {
            pairs.push(("page_token", token));
        }
        let query: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect();
        let mut link = call.ctx.link(self.path);
        if !query.is_empty() {
            link.push('?');
            link.push_str(&query.join("&"));
        }
        link
    }
}

pub(super) fn decode_page_token(token: &str) -> Option<String> {
    if token.is_empty() || token.len() > MAX_PAGE_TOKEN_LEN {
        return None;
    }
    String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()
}

/// The caller's filters that are present, as `(name, value)` pairs.
pub(super) fn present<'a>(call: &'a Call<'_>, names: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    names
        .iter()
        .filter_map(|n| call.query.get(n).map(|v| (*n, v)))
        .collect()
}
