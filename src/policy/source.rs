//! Fetching role bindings and the resource inventory from the upstream Confluent Cloud API.
//!
//! keygate's HTTP client implements [`Fetch`] with its own upstream credential; this module only
//! knows paths, pagination (`metadata.next`'s `page_token`) and response shapes, and turns pages
//! into the same [`BindingIndex`] / [`Inventory`] the file loaders produce. It follows `next` links
//! by rebuilding the path on the configured upstream, never by requesting the absolute URL. Items it
//! cannot use are skipped and counted, which can only take permissions away (fail closed); a failed
//! or malformed page fails the whole fetch, so the caller keeps the previous data. Scheduling,
//! caching and the staleness bound belong to the caller (see `snapshot::AuthzData`).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::bindings::{BindingIndex, BindingIndexBuilder};
use super::crn::OrgId;
use super::inventory::{ClusterKind, Inventory, InventoryBuilder};

/// Page size asked of the upstream; Confluent documents 100 as the maximum.
const PAGE_SIZE: u32 = 100;

/// Most pages followed for one listing (a million items at [`PAGE_SIZE`]), so a misbehaving
/// upstream cannot keep a refresh running forever.
const MAX_PAGES: usize = 10_000;

/// Longest `page_token` accepted; Confluent documents at most 255 characters, percent-encoding may
/// triple that.
const MAX_PAGE_TOKEN_LEN: usize = 765;

/// The future [`Fetch::get_json`] returns.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, FetchError>> + Send + 'a>>;

/// A GET against the upstream Confluent Cloud API with keygate's own credential.
pub trait Fetch: Send + Sync {
    /// GETs `path_and_query` (e.g. `/org/v2/environments?page_size=100`) and returns the parsed
    /// JSON body of a 2xx response; any other status is [`FetchError::Status`].
    fn get_json<'a>(&'a self, path_and_query: &'a str) -> FetchFuture<'a>;
}

/// Why fetching authorization data from the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request did not complete (connect, TLS, timeout, body read).
    #[error("upstream `{path}`: {reason}")]
    Transport {
        /// The path and query requested.
        path: String,
        /// What went wrong (no secrets, no bodies).
        reason: String,
    },
    /// The upstream answered with a non-2xx status.
    #[error("upstream `{path}`: status {status}")]
    Status {
        /// The path and query requested.
        path: String,
        /// The HTTP status.
        status: u16,
    },
    /// The response is not the list shape Confluent documents.
    #[error("upstream `{path}`: unexpected response: {reason}")]
    Shape {
        /// The path and query requested.
        path: String,
        /// What did not match.
        reason: String,
    },
    /// The upstream refused the request (4xx) and the fetcher keeps refusals whole, so the caller
    /// can pass the answer on (a key lookup made with the caller's own credential).
    #[error("upstream `{path}`: status {}", .answer.status)]
    Refused {
        /// The path and query requested.
        path: String,
        /// The upstream's answer.
        answer: Box<Refusal>,
    },
    /// Pagination did not terminate properly.
    #[error("upstream `{path}`: {reason}")]
    Pagination {
        /// The path and query requested.
        path: String,
        /// What went wrong.
        reason: &'static str,
    },
}

/// An upstream refusal kept whole (see [`FetchError::Refused`]).
#[derive(Debug)]
pub struct Refusal {
    /// The status (4xx).
    pub status: http::StatusCode,
    /// The response headers.
    pub headers: http::HeaderMap,
    /// The response body.
    pub body: bytes::Bytes,
}

/// What keygate knows of an existing API key (`GET /iam/v2/api-keys/{id}`), for organisation
/// policies (`context.target_key`). Never its secret: Confluent does not return one on a read,
/// and only these fields are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFacts {
    /// The key id.
    pub id: String,
    /// `spec.owner.id`, if present.
    pub owner_id: Option<String>,
    /// `spec.resource.id`, if present (absent for Cloud keys).
    pub resource_id: Option<String>,
    /// `spec.description`, `""` when absent.
    pub description: String,
    /// `spec.display_name`, `""` when absent.
    pub display_name: String,
}

/// Looks up one API key (`GET /iam/v2/api-keys/{id}`). The fetcher decides whose credential is
/// used; the request path reads with the caller's own, exactly as the caller would read it.
pub async fn fetch_key(f: &dyn Fetch, key_id: &str) -> Result<KeyFacts, FetchError> {
    let v = f.get_json(&format!("/iam/v2/api-keys/{key_id}")).await?;
    let spec = &v["spec"];
    let text = |p: &Value| p.as_str().map(str::to_string);
    Ok(KeyFacts {
        id: key_id.to_string(),
        owner_id: text(&spec["owner"]["id"]),
        resource_id: text(&spec["resource"]["id"]),
        description: text(&spec["description"]).unwrap_or_default(),
        display_name: text(&spec["display_name"]).unwrap_or_default(),
    })
}

/// Fetches every role binding of the organisation from `GET /iam/v2/role-bindings`, using the
/// organisation's CRN as the (required) substring `crn_pattern` filter.
pub async fn fetch_bindings(f: &dyn Fetch, org: &OrgId) -> Result<BindingIndex, FetchError> {
    #[derive(Deserialize)]
    struct Item {
        principal: String,
        role_name: String,
        crn_pattern: String,
    }
    let base = format!(
        "/iam/v2/role-bindings?crn_pattern={}",
        encode_query_value(&org.crn())
    );
    let mut builder = BindingIndexBuilder::new(org.clone());
    for item in list_all(f, &base).await? {
        let pushed = serde_json::from_value::<Item>(item).ok().and_then(|b| {
            builder
                .push(&b.principal, &b.role_name, &b.crn_pattern)
                .ok()
        });
        if pushed.is_none() {
            builder.skip();
        }
    }
    let index = builder.build();
    if index.skipped() > 0 {
        tracing::warn!(
            bindings.skipped = index.skipped(),
            bindings.loaded = index.len(),
            "Skipped upstream role bindings keygate cannot parse"
        );
    }
    Ok(index)
}

/// Fetches the inventory: `GET /org/v2/environments`, then per environment its Kafka
/// (`/cmk/v2/clusters`, with each cluster's `spec.config.kind`), Schema Registry (`/srcm/v3/clusters`) and ksqlDB (`/ksqldbcm/v2/clusters`)
/// clusters, all paginated.
pub async fn fetch_inventory(f: &dyn Fetch) -> Result<Inventory, FetchError> {
    #[derive(Deserialize)]
    struct Item {
        id: String,
        #[serde(default)]
        spec: Option<Spec>,
    }
    #[derive(Deserialize)]
    struct Spec {
        #[serde(default)]
        kafka_cluster: Option<Ref>,
        #[serde(default)]
        config: Option<ClusterConfig>,
    }
    #[derive(Deserialize)]
    struct ClusterConfig {
        #[serde(default)]
        kind: Option<String>,
    }
    #[derive(Deserialize)]
    struct Ref {
        id: String,
    }

    let mut b = InventoryBuilder::new();
    let mut skipped = 0usize;
    let environments: Vec<Item> = typed(
        list_all(f, "/org/v2/environments?").await?,
        "/org/v2/environments",
    )?;
    for env in environments {
        if b.environment(&env.id).is_err() {
            skipped += 1;
            continue;
        }
        let q = encode_query_value(&env.id);
        let (kafka, sr, ksql) = (
            format!("/cmk/v2/clusters?environment={q}"),
            format!("/srcm/v3/clusters?environment={q}"),
            format!("/ksqldbcm/v2/clusters?environment={q}"),
        );
        let (k, s, x) = tokio::join!(list_all(f, &kafka), list_all(f, &sr), list_all(f, &ksql));
        for c in typed::<Item>(k?, &kafka)? {
            let kind = c
                .spec
                .and_then(|s| s.config)
                .and_then(|config| config.kind)
                .map(|kind| ClusterKind::parse(&kind));
            skipped += usize::from(b.kafka_cluster_of_kind(&c.id, &env.id, kind).is_err());
        }
        for c in typed::<Item>(s?, &sr)? {
            skipped += usize::from(b.schema_registry(&c.id, &env.id).is_err());
        }
        for c in typed::<Item>(x?, &ksql)? {
            let lkc = c.spec.and_then(|s| s.kafka_cluster).map(|r| r.id);
            let lkc = lkc.as_deref().filter(|id| !id.is_empty());
            skipped += usize::from(b.ksqldb_cluster(&c.id, &env.id, lkc).is_err());
        }
    }
    let inventory = b.build();
    if skipped > 0 {
        tracing::warn!(
            inventory.skipped = skipped,
            inventory.clusters = inventory.cluster_count(),
            "Skipped upstream inventory entries keygate cannot parse"
        );
    }
    Ok(inventory)
}

/// One page of a Confluent list response.
#[derive(Deserialize)]
struct Page {
    data: Vec<Value>,
    #[serde(default)]
    metadata: Option<PageMetadata>,
}

#[derive(Deserialize)]
struct PageMetadata {
    #[serde(default)]
    next: Option<String>,
}

/// All items of a paginated list. `base` is a path ending in `?` or in a query.
async fn list_all(f: &dyn Fetch, base: &str) -> Result<Vec<Value>, FetchError> {
    let mut items = Vec::new();
    for_each_page(f, base, |page| {
        items.extend(page);
        Ok(())
    })
    .await?;
    Ok(items)
}

/// Hands every page of a paginated list to `on_page` as it arrives, so a listing of any length
/// holds one page at a time. `base` is a path ending in `?` or in a query.
pub(crate) async fn for_each_page(
    f: &dyn Fetch,
    base: &str,
    mut on_page: impl FnMut(Vec<Value>) -> Result<(), FetchError>,
) -> Result<(), FetchError> {
    let sep = if base.ends_with('?') { "" } else { "&" };
    let first = format!("{base}{sep}page_size={PAGE_SIZE}");
    let mut path = first.clone();
    let mut seen = HashSet::new();
    for _ in 0..MAX_PAGES {
        let body = f.get_json(&path).await?;
        let page: Page = serde_json::from_value(body).map_err(|e| FetchError::Shape {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        on_page(page.data)?;
        let next = page.metadata.and_then(|m| m.next).filter(|n| !n.is_empty());
        let Some(next) = next else {
            return Ok(());
        };
        let token = page_token(&next).ok_or_else(|| FetchError::Pagination {
            path: path.clone(),
            reason: "`metadata.next` has no usable `page_token`",
        })?;
        if !seen.insert(token.to_owned()) {
            return Err(FetchError::Pagination {
                path,
                reason: "`metadata.next` repeats a page token",
            });
        }
        path = format!("{first}&page_token={token}");
    }
    Err(FetchError::Pagination {
        path: first,
        reason: "more pages than keygate follows",
    })
}

/// Parses list items into `T`; any mismatch fails the fetch.
fn typed<T: DeserializeOwned>(items: Vec<Value>, path: &str) -> Result<Vec<T>, FetchError> {
    items
        .into_iter()
        .map(|v| {
            serde_json::from_value(v).map_err(|e| FetchError::Shape {
                path: path.to_owned(),
                reason: e.to_string(),
            })
        })
        .collect()
}

/// The `page_token` query value of a `next` link, still percent-encoded, if it is safe to put
/// back into a query verbatim.
fn page_token(next: &str) -> Option<&str> {
    let query = next.split_once('?')?.1;
    let query = query.split('#').next()?;
    let token = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("page_token="))?;
    let ok = !token.is_empty()
        && token.len() <= MAX_PAGE_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%+=".contains(&b));
    ok.then_some(token)
}

/// Percent-encodes everything but RFC 3986 unreserved characters (§2.3).
fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

#[cfg(test)]
mod tests;
