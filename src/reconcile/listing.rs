//! The organisation's API keys as the upstream lists them (`GET /iam/v2/api-keys`, every page,
//! with keygate's own credential), kept compact: a page at a time is parsed and only what reconcile
//! and the quota guard need is kept (id, owner, resource, environment, display name, creation
//! time). About 100 bytes a key.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::policy::source::{for_each_page, Fetch, FetchError};

/// The listing path; `page_size` and `page_token` are added per page.
const PATH: &str = "/iam/v2/api-keys?";

/// One key upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamKey {
    /// The key id.
    pub id: Box<str>,
    /// `spec.owner.id`.
    pub owner: Box<str>,
    /// `spec.resource.id` (`cloud` when the upstream gives none).
    pub resource: Box<str>,
    /// `spec.resource.environment`, when given.
    pub environment: Option<Box<str>>,
    /// `spec.display_name`.
    pub display_name: Box<str>,
    /// `metadata.created_at` as the upstream wrote it.
    pub created_at: Box<str>,
    /// `created_at` in Unix seconds (0 when it cannot be read: the key counts as old).
    pub created_unix: i64,
}

/// Every key of the organisation, by id.
#[derive(Debug, Default)]
pub struct Listing {
    /// The keys.
    pub keys: HashMap<Box<str>, UpstreamKey>,
    /// Items the upstream returned that are not keys keygate can read (skipped).
    pub skipped: usize,
}

#[derive(Deserialize)]
struct Item {
    id: String,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    spec: Option<Spec>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    created_at: Option<String>,
}

#[derive(Deserialize)]
struct Spec {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    owner: Option<Ref>,
    #[serde(default)]
    resource: Option<Ref>,
}

#[derive(Deserialize)]
struct Ref {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    environment: Option<String>,
}

/// Lists every key, page by page.
pub async fn list(fetch: &dyn Fetch) -> Result<Listing, FetchError> {
    let mut listing = Listing::default();
    for_each_page(fetch, PATH, |page| {
        for value in page {
            match serde_json::from_value::<Item>(value).ok().and_then(key) {
                Some(key) => {
                    listing.keys.insert(key.id.clone(), key);
                }
                None => listing.skipped += 1,
            }
        }
        Ok(())
    })
    .await?;
    Ok(listing)
}

fn key(item: Item) -> Option<UpstreamKey> {
    let spec = item.spec?;
    let owner = spec.owner?.id.filter(|id| !id.is_empty())?;
    let (resource, environment) = match spec.resource {
        Some(r) => (
            r.id.filter(|id| !id.is_empty())
                .unwrap_or_else(|| "cloud".to_owned()),
            r.environment.filter(|e| !e.is_empty()),
        ),
        None => ("cloud".to_owned(), None),
    };
    let created_at = item.metadata.and_then(|m| m.created_at).unwrap_or_default();
    Some(UpstreamKey {
        created_unix: unix_seconds(&created_at).unwrap_or(0),
        id: item.id.into(),
        owner: owner.into(),
        resource: resource.into(),
        environment: environment.map(Into::into),
        display_name: spec.display_name.unwrap_or_default().into(),
        created_at: created_at.into(),
    })
}

/// An RFC 3339 time in Unix seconds.
pub(crate) fn unix_seconds(text: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(text).ok()?;
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

/// Now, in Unix seconds.
pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .unwrap_or(0)
}
