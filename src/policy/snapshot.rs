//! The authorization data a decision reads — matrix, role bindings, inventory — as one immutable
//! snapshot, and [`AuthzData`], which swaps snapshots atomically when a part is reloaded.
//!
//! Requests load the current snapshot without locking (`arc_swap`); a reload or background refresh
//! builds the new part off the request path and replaces it in one step. Each snapshot records when
//! its bindings and inventory were last refreshed, so the caller can enforce a staleness bound. The
//! refresh tasks themselves (timers, file watching, SIGHUP) live with the lead's runtime, not here.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::{ArcSwap, Guard};

use super::bindings::BindingIndex;
use super::crn::OrgId;
use super::external::ExternalBindings;
use super::inventory::Inventory;
use super::matrix::Matrix;

/// Everything layer 1 reads, consistent at one point in time. Cheap to clone (four `Arc`s).
#[derive(Debug, Clone)]
pub struct AuthzSnapshot {
    matrix: Arc<Matrix>,
    bindings: Arc<BindingIndex>,
    inventory: Arc<Inventory>,
    bindings_refreshed_at: Instant,
    inventory_refreshed_at: Instant,
    revision: Arc<String>,
    parts: Arc<super::revision::PartRevisions>,
    org: Option<Arc<super::org::OrgPolicies>>,
    external: Arc<ExternalBindings>,
}

impl AuthzSnapshot {
    /// A snapshot whose bindings and inventory were both refreshed at `refreshed_at`. The
    /// organisation is the bindings' organisation.
    pub fn new(
        matrix: Arc<Matrix>,
        bindings: Arc<BindingIndex>,
        inventory: Arc<Inventory>,
        refreshed_at: Instant,
    ) -> Self {
        AuthzSnapshot {
            matrix,
            bindings,
            inventory,
            bindings_refreshed_at: refreshed_at,
            inventory_refreshed_at: refreshed_at,
            revision: Arc::default(),
            parts: Arc::default(),
            org: None,
            external: Arc::default(),
        }
    }

    /// The same data with keygate-side bindings of external principals, swapped together with it.
    pub fn with_external_bindings(mut self, external: Arc<ExternalBindings>) -> Self {
        self.external = external;
        self
    }

    /// The keygate-side bindings of external principals (empty when not configured).
    pub fn external_bindings(&self) -> &ExternalBindings {
        &self.external
    }

    /// The same data with organisational policies (layer 2), swapped together with it.
    pub fn with_org(mut self, org: Option<Arc<super::org::OrgPolicies>>) -> Self {
        self.org = org;
        self
    }

    /// The organisational policies, when configured.
    pub fn org_policies(&self) -> Option<&Arc<super::org::OrgPolicies>> {
        self.org.as_ref()
    }

    /// The same data stamped with the policy-set revision it belongs to, so a decision and the
    /// revision it reports always come from one atomic load.
    pub fn with_revision(mut self, revision: Arc<String>) -> Self {
        self.revision = revision;
        self
    }

    /// The matrix, shared.
    pub fn matrix_shared(&self) -> &Arc<Matrix> {
        &self.matrix
    }

    /// The same data stamped with the revisions of its parts.
    pub fn with_parts(mut self, parts: Arc<super::revision::PartRevisions>) -> Self {
        self.parts = parts;
        self
    }

    /// The revisions of the parts (matrix, policies, bindings, inventory).
    pub fn parts(&self) -> &Arc<super::revision::PartRevisions> {
        &self.parts
    }

    /// The policy-set revision of this snapshot (empty until stamped).
    pub fn revision(&self) -> &Arc<String> {
        &self.revision
    }

    /// The configured organisation.
    pub fn org(&self) -> &OrgId {
        self.bindings.org()
    }

    /// The creation matrix.
    pub fn matrix(&self) -> &Matrix {
        &self.matrix
    }

    /// The role bindings.
    pub fn bindings(&self) -> &BindingIndex {
        &self.bindings
    }

    /// The resource inventory.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// When the bindings were last loaded or fetched.
    pub fn bindings_refreshed_at(&self) -> Instant {
        self.bindings_refreshed_at
    }

    /// When the inventory was last loaded or fetched.
    pub fn inventory_refreshed_at(&self) -> Instant {
        self.inventory_refreshed_at
    }

    /// The older of the two refresh times: compare it with a staleness bound.
    pub fn oldest_refresh(&self) -> Instant {
        self.bindings_refreshed_at.min(self.inventory_refreshed_at)
    }
}

/// The live authorization data: the current [`AuthzSnapshot`] behind an `ArcSwap`.
#[derive(Debug)]
pub struct AuthzData {
    current: ArcSwap<AuthzSnapshot>,
}

impl AuthzData {
    /// Starts with `snapshot`.
    pub fn new(snapshot: AuthzSnapshot) -> Self {
        AuthzData {
            current: ArcSwap::from_pointee(snapshot),
        }
    }

    /// The current snapshot as an owned `Arc`.
    pub fn load_full(&self) -> Arc<AuthzSnapshot> {
        self.current.load_full()
    }

    /// The current snapshot, for one decision (lock-free; hold it only for the decision).
    pub fn load(&self) -> Guard<Arc<AuthzSnapshot>> {
        self.current.load()
    }

    /// Replaces everything at once.
    pub fn store(&self, snapshot: AuthzSnapshot) {
        self.current.store(Arc::new(snapshot));
    }

    /// Stamps the current snapshot with a revision.
    pub fn set_revision(&self, revision: Arc<String>) {
        self.current
            .rcu(|cur| AuthzSnapshot::clone(cur).with_revision(revision.clone()));
    }

    /// Replaces the matrix (a reload of `matrix.toml`), keeping bindings and inventory.
    pub fn replace_matrix(&self, matrix: Matrix) {
        let matrix = Arc::new(matrix);
        self.current.rcu(|cur| AuthzSnapshot {
            matrix: matrix.clone(),
            ..AuthzSnapshot::clone(cur)
        });
    }

    /// Replaces the role bindings, recording when they were fetched or loaded.
    pub fn replace_bindings(&self, bindings: BindingIndex, refreshed_at: Instant) {
        let bindings = Arc::new(bindings);
        self.current.rcu(|cur| AuthzSnapshot {
            bindings: bindings.clone(),
            bindings_refreshed_at: refreshed_at,
            ..AuthzSnapshot::clone(cur)
        });
    }

    /// Replaces the inventory, recording when it was fetched or loaded.
    pub fn replace_inventory(&self, inventory: Inventory, refreshed_at: Instant) {
        let inventory = Arc::new(inventory);
        self.current.rcu(|cur| AuthzSnapshot {
            inventory: inventory.clone(),
            inventory_refreshed_at: refreshed_at,
            ..AuthzSnapshot::clone(cur)
        });
    }
}
