//! Slicing a policy set so that a request evaluates only the policies that can apply to it.
//!
//! Cedar evaluates every policy of the set it is given, so the cost of a decision grows with the
//! set. At load time each policy is put into one bucket by the literal constraint that Cedar lets
//! us see statically, most selective first:
//!
//! - the scope: `principal == User::"u-…"` (by principal), `resource == ApiKey::"…"` (by key id),
//!   `principal is ServiceAccount` (by principal type); the action scope already splits the set
//!   per action;
//! - the first condition, when it is a `when` whose first conjunct (after `has` tests) is
//!   `context.owner.id == "…"`, `context.resource.environment == "…"` or
//!   `principal.groups.contains("…")` (either side of `==`);
//! - everything else goes to the bucket that is always evaluated.
//!
//! A request then evaluates its action's "always" bucket plus the buckets its own values select
//! (hash lookups), each policy with one evaluator for the request (`cedar-policy-core`'s, which
//! `cedar-policy`'s authorizer runs per policy too), its condition built once at load. Skipping a policy is only correct when evaluating it would have given `false`
//! *without an error*, since an error is reported (and denies). Cedar evaluates `principal &&
//! action && resource && when₁ && …` left to right and stops at the first `false`, and a scope
//! test never errors, so a policy whose scope does not match is `false`; and a `when` whose
//! leading conjuncts are `has` tests followed by a comparison with a literal is `false` without
//! error when the request's value differs. When the request lacks the compared attribute, the
//! `has` tests before the comparison decide (see [`Guards`]): a policy whose tests make it
//! `false` is skipped, any other is evaluated in full, so it reports the same error it would in
//! the whole set. The property test in `tests` compares the sliced and the whole evaluation.
//!
//! Deliberately not here: which sets apply to a request (`team`), building the Cedar request
//! (`request`), and turning Cedar's answer into findings (`super`).

use std::collections::HashMap;

#[cfg(test)]
use cedar_policy::PolicySet;
use cedar_policy::{Policy, PrincipalConstraint, ResourceConstraint};
use cedar_policy_core::ast::{self, Literal, ValueKind};
use cedar_policy_core::evaluator::{EvaluationError, Evaluator};
use serde_json::Value;

use super::request::{action_index, Vocabulary};
use super::OrgInput;
use crate::model::PrincipalKind;

/// `context.owner.id`.
const OWNER_PATH: Path<'static> = Path {
    var: "context",
    attrs: &["owner", "id"],
};
/// `context.resource.environment`.
const ENVIRONMENT_PATH: Path<'static> = Path {
    var: "context",
    attrs: &["resource", "environment"],
};
/// `principal.groups`.
const GROUPS_PATH: Path<'static> = Path {
    var: "principal",
    attrs: &["groups"],
};

/// A variable followed by attribute accesses, e.g. `context.owner.id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Path<'a> {
    var: &'a str,
    attrs: &'a [&'a str],
}

/// What the request holds at an indexed path: the value, or the first attribute it lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum At<'a> {
    /// The whole path exists and has this value.
    Value(&'a str),
    /// The attribute at this position of the path (0 = the first after the variable) is absent.
    Missing(usize),
}

/// The `has` tests that come before an indexed comparison, in evaluation order: for each, the
/// position in the indexed path of the attribute it tests (`context has owner` → 0,
/// `context.owner has id` → 1), or `None` for a test of something else on the variable itself
/// (`context has owner_key_count`), which never errors but may be true or false.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Guards(Vec<Option<usize>>);

impl Guards {
    /// Whether a request lacking the attribute at `missing` makes the conjunction `false` without
    /// an error: a test of that very attribute comes before any test (or read) that would reach
    /// past it.
    fn skip_when_missing(&self, missing: usize) -> bool {
        for level in self.0.iter().flatten() {
            match level.cmp(&missing) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return true,
                std::cmp::Ordering::Greater => return false,
            }
        }
        // The comparison itself reads the missing attribute: an error.
        false
    }
}

/// The bucket a policy is put in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Evaluated for every request of its actions.
    Always,
    /// `principal == <type>::"<id>"`, by principal kind.
    Principal(PrincipalKind, String),
    /// `resource == ApiKey::"<id>"`.
    Key(String),
    /// `context.owner.id == "<id>"`; evaluated also when the request has no owner, unless the
    /// guards make it false then.
    Owner {
        /// The literal.
        value: String,
        /// Evaluate when `context` has no `owner`.
        when_no_owner: bool,
    },
    /// `context.resource.environment == "<id>"`.
    Environment {
        /// The literal.
        value: String,
        /// Evaluate when `context` has no `resource`.
        when_no_resource: bool,
        /// Evaluate when `context.resource` has no `environment`.
        when_no_environment: bool,
    },
    /// `principal.groups.contains("<group>")`.
    Group(String),
    /// `principal is <type>`.
    PrincipalKind(PrincipalKind),
}

/// The request values that select buckets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keys<'a> {
    pub(crate) principal_kind: PrincipalKind,
    pub(crate) principal_id: &'a str,
    /// The resource entity's id (`new`, `*` or the key id).
    pub(crate) key_id: &'a str,
    /// `context.owner.id`.
    pub(crate) owner: At<'a>,
    /// `context.resource.environment`.
    pub(crate) environment: At<'a>,
}

impl<'a> Keys<'a> {
    /// What [`super::OrgPolicies`] puts into the Cedar request for `input`, seen through the
    /// indexed paths. INVARIANT: mirrors `request.rs` (which attributes exist per action); the
    /// property test would catch a difference.
    pub(crate) fn of(input: &OrgInput<'a>, key_id: &'a str) -> Keys<'a> {
        use crate::model::Action;
        let (owner, resource) = match input.action {
            Action::CreateApiKey | Action::ListApiKeys => (input.owner_id, input.resource),
            Action::GetApiKey | Action::UpdateApiKey | Action::DeleteApiKey => (None, None),
        };
        Keys {
            principal_kind: input.principal_kind,
            principal_id: input.principal_id,
            key_id,
            owner: owner.map_or(At::Missing(0), At::Value),
            environment: match resource {
                None => At::Missing(0),
                Some(r) => r.environment.map_or(At::Missing(1), At::Value),
            },
        }
    }
}

fn kind_index(kind: PrincipalKind) -> usize {
    match kind {
        PrincipalKind::User => 0,
        PrincipalKind::ServiceAccount => 1,
        PrincipalKind::IdentityPool => 2,
        PrincipalKind::External => 3,
    }
}

/// A policy ready to evaluate: its id and its whole condition (scope and clauses), built once.
pub(crate) struct CompiledPolicy {
    pub(crate) id: ast::PolicyID,
    condition: ast::Expr,
    slots: ast::SlotEnv,
}

/// How one policy evaluated.
pub(crate) enum Outcome {
    /// It matched.
    Satisfied,
    /// Its evaluation failed.
    Failed(Box<EvaluationError>),
    /// It evaluated to something other than a boolean (cannot happen: a condition is a
    /// conjunction); treated as a failure.
    NotBoolean,
}

impl CompiledPolicy {
    fn new(policy: &Policy) -> CompiledPolicy {
        let policy: &ast::Policy = policy.as_ref();
        CompiledPolicy {
            id: policy.id().clone(),
            condition: policy.condition(),
            slots: policy.env().clone(),
        }
    }

    /// What `cedar-policy`'s authorizer does for each policy: interpret the condition; `None`
    /// when it is false.
    fn evaluate(&self, evaluator: &Evaluator<'_>) -> Option<Outcome> {
        match evaluator.interpret(&self.condition, &self.slots) {
            Ok(value) => match value.value {
                ValueKind::Lit(Literal::Bool(true)) => Some(Outcome::Satisfied),
                ValueKind::Lit(Literal::Bool(false)) => None,
                _ => Some(Outcome::NotBoolean),
            },
            Err(e) => Some(Outcome::Failed(Box::new(e))),
        }
    }
}

/// One action's buckets: indexes into the set's policies.
#[derive(Default)]
struct ActionIndex {
    always: Vec<u32>,
    principal: [HashMap<Box<str>, Vec<u32>>; 4],
    principal_kind: [Vec<u32>; 4],
    key: HashMap<Box<str>, Vec<u32>>,
    owner: HashMap<Box<str>, Vec<u32>>,
    no_owner: Vec<u32>,
    environment: HashMap<Box<str>, Vec<u32>>,
    no_resource: Vec<u32>,
    no_environment: Vec<u32>,
    group: HashMap<Box<str>, Vec<u32>>,
    /// Policies of this action.
    len: usize,
}

fn add_to(map: &mut HashMap<Box<str>, Vec<u32>>, key: &str, policy: u32) {
    map.entry(key.into()).or_default().push(policy);
}

impl ActionIndex {
    fn insert(&mut self, slot: &Slot, policy: u32) {
        self.len += 1;
        match slot {
            Slot::Always => self.always.push(policy),
            Slot::Principal(kind, id) => add_to(&mut self.principal[kind_index(*kind)], id, policy),
            Slot::PrincipalKind(kind) => self.principal_kind[kind_index(*kind)].push(policy),
            Slot::Key(id) => add_to(&mut self.key, id, policy),
            Slot::Owner {
                value,
                when_no_owner,
            } => {
                if *when_no_owner {
                    self.no_owner.push(policy);
                }
                add_to(&mut self.owner, value, policy);
            }
            Slot::Environment {
                value,
                when_no_resource,
                when_no_environment,
            } => {
                if *when_no_resource {
                    self.no_resource.push(policy);
                }
                if *when_no_environment {
                    self.no_environment.push(policy);
                }
                add_to(&mut self.environment, value, policy);
            }
            Slot::Group(group) => add_to(&mut self.group, group, policy),
        }
    }

    /// Calls `f` with every bucket `keys` selects; each policy is in at most one of them (the
    /// "missing" buckets and the value buckets of one path exclude each other).
    fn each<'s>(&'s self, keys: &Keys<'_>, groups: &[&str], mut f: impl FnMut(&'s [u32])) {
        let kind = kind_index(keys.principal_kind);
        let by_value = |map: &'s HashMap<Box<str>, Vec<u32>>, at: At<'_>| match at {
            At::Value(v) => map.get(v).map(Vec::as_slice),
            At::Missing(_) => None,
        };
        let singles = [
            Some(self.always.as_slice()),
            self.principal[kind]
                .get(keys.principal_id)
                .map(Vec::as_slice),
            Some(self.principal_kind[kind].as_slice()),
            self.key.get(keys.key_id).map(Vec::as_slice),
            by_value(&self.owner, keys.owner),
            match keys.owner {
                At::Value(_) => None,
                At::Missing(_) => Some(self.no_owner.as_slice()),
            },
            by_value(&self.environment, keys.environment),
            match keys.environment {
                At::Value(_) => None,
                At::Missing(0) => Some(self.no_resource.as_slice()),
                At::Missing(_) => Some(self.no_environment.as_slice()),
            },
        ];
        for bucket in singles.into_iter().flatten() {
            if !bucket.is_empty() {
                f(bucket);
            }
        }
        if !self.group.is_empty() {
            for g in groups {
                if let Some(bucket) = self.group.get(*g) {
                    f(bucket);
                }
            }
        }
    }
}

/// A policy set, split per action and sliced into buckets.
pub(crate) struct SetIndex {
    policies: Vec<CompiledPolicy>,
    by_action: [ActionIndex; 5],
    /// The whole set per action, for the tests that compare against `cedar-policy`'s authorizer.
    #[cfg(test)]
    whole: [PolicySet; 5],
}

impl std::fmt::Debug for SetIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetIndex")
            .field("policies", &self.policies.len())
            .finish_non_exhaustive()
    }
}

impl SetIndex {
    /// Indexes every policy of `all`, in the order given (the order of [`SetIndex::policies`]),
    /// in the buckets of every action its action scope can match. A scope naming anything but
    /// the five actions (an action group of a customised schema) is kept for every action, so the
    /// split never drops a policy that could apply.
    pub(crate) fn new<'p>(
        all: impl Iterator<Item = &'p Policy>,
        vocabulary: &Vocabulary,
    ) -> Result<SetIndex, String> {
        let mut by_action: [ActionIndex; 5] = Default::default();
        let mut policies = Vec::new();
        #[cfg(test)]
        let mut whole: [PolicySet; 5] = Default::default();
        for policy in all {
            let slot = slot_of(policy, vocabulary);
            let index = u32::try_from(policies.len()).map_err(|e| e.to_string())?;
            policies.push(CompiledPolicy::new(policy));
            for i in vocabulary.actions_of(&policy.action_constraint()) {
                if let Some(action) = by_action.get_mut(i) {
                    action.insert(&slot, index);
                }
                #[cfg(test)]
                if let Some(set) = whole.get_mut(i) {
                    set.add(policy.clone()).map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(SetIndex {
            policies,
            by_action,
            #[cfg(test)]
            whole,
        })
    }

    /// The set's policies, in load order.
    pub(crate) fn policies(&self) -> &[CompiledPolicy] {
        &self.policies
    }

    /// Whether any policy can apply to the action at `index` (see `request::action_index`).
    pub(crate) fn governs(&self, action: usize) -> bool {
        self.by_action.get(action).is_some_and(|a| a.len > 0)
    }

    /// Evaluates the policies that `keys` and `groups` select for `action`, passing the index of
    /// each one that matched or failed, and how, to `f`.
    pub(crate) fn evaluate(
        &self,
        evaluator: &Evaluator<'_>,
        action: crate::model::Action,
        keys: &Keys<'_>,
        groups: &[&str],
        mut f: impl FnMut(usize, Outcome),
    ) {
        let Some(index) = self.by_action.get(action_index(action)) else {
            return;
        };
        index.each(keys, groups, |bucket| {
            for &i in bucket {
                let i = i as usize;
                if let Some(outcome) = self.policies.get(i).and_then(|p| p.evaluate(evaluator)) {
                    f(i, outcome);
                }
            }
        });
    }

    /// The whole set of `action`: what the slicing must agree with.
    #[cfg(test)]
    pub(crate) fn whole(&self, action: crate::model::Action) -> &PolicySet {
        &self.whole[action_index(action)]
    }

    /// How many policies of `action` the request described by `keys` evaluates.
    #[cfg(test)]
    pub(crate) fn evaluated(
        &self,
        action: crate::model::Action,
        keys: &Keys<'_>,
        groups: &[&str],
    ) -> usize {
        let mut n = 0;
        if let Some(index) = self.by_action.get(action_index(action)) {
            index.each(keys, groups, |bucket| n += bucket.len());
        }
        n
    }
}

/// The bucket of `policy`.
pub(crate) fn slot_of(policy: &Policy, vocabulary: &Vocabulary) -> Slot {
    if let PrincipalConstraint::Eq(uid) = policy.principal_constraint() {
        if let Some(kind) = vocabulary.principal_kind(uid.type_name()) {
            return Slot::Principal(kind, uid.id().unescaped().to_owned());
        }
    }
    if let ResourceConstraint::Eq(uid) = policy.resource_constraint() {
        if vocabulary.is_api_key(&uid) {
            return Slot::Key(uid.id().unescaped().to_owned());
        }
    }
    if let Some(slot) = policy.to_json().ok().and_then(|json| condition_slot(&json)) {
        return slot;
    }
    if let PrincipalConstraint::Is(type_name) = policy.principal_constraint() {
        if let Some(kind) = vocabulary.principal_kind(&type_name) {
            return Slot::PrincipalKind(kind);
        }
    }
    Slot::Always
}

/// The bucket given by the first condition of a policy in Cedar's JSON form, if it has one.
fn condition_slot(policy: &Value) -> Option<Slot> {
    let first = policy.get("conditions")?.as_array()?.first()?;
    if first.get("kind")?.as_str()? != "when" {
        return None;
    }
    let mut conjuncts = Vec::new();
    flatten_and(first.get("body")?, &mut conjuncts);
    let split = conjuncts.iter().position(|c| has_test(c).is_none())?;
    let (tests, rest) = conjuncts.split_at(split);
    let comparison = rest.first()?;
    let (path, literal) = comparison_of(comparison)?;
    let guards = guards_on(tests, path)?;
    let slot = if path == OWNER_PATH {
        Slot::Owner {
            value: literal.to_owned(),
            when_no_owner: !guards.skip_when_missing(0),
        }
    } else if path == ENVIRONMENT_PATH {
        Slot::Environment {
            value: literal.to_owned(),
            when_no_resource: !guards.skip_when_missing(0),
            when_no_environment: !guards.skip_when_missing(1),
        }
    } else if path == GROUPS_PATH {
        // `principal.groups` always exists in keygate's requests.
        Slot::Group(literal.to_owned())
    } else {
        return None;
    };
    Some(slot)
}

/// The conjuncts of `e` in evaluation order (`a && (b && c)` and `(a && b) && c` alike).
fn flatten_and<'v>(e: &'v Value, out: &mut Vec<&'v Value>) {
    match e.get("&&") {
        Some(and) => {
            if let (Some(left), Some(right)) = (and.get("left"), and.get("right")) {
                flatten_and(left, out);
                flatten_and(right, out);
            } else {
                out.push(e);
            }
        }
        None => out.push(e),
    }
}

/// `x.a.b` as a path (an owned list of attribute names, borrowed from the JSON).
fn path_of(e: &Value) -> Option<(&str, Vec<&str>)> {
    if let Some(var) = e.get("Var") {
        return Some((var.as_str()?, Vec::new()));
    }
    let access = e.get(".")?;
    let (var, mut attrs) = path_of(access.get("left")?)?;
    attrs.push(access.get("attr")?.as_str()?);
    Some((var, attrs))
}

/// `<path> has <attr>`: the path of the tested attribute.
fn has_test(e: &Value) -> Option<(&str, Vec<&str>)> {
    let has = e.get("has")?;
    let (var, mut attrs) = path_of(has.get("left")?)?;
    attrs.push(has.get("attr")?.as_str()?);
    Some((var, attrs))
}

/// `<path> == "literal"` (either way round) or `<path>.contains("literal")` for one of the
/// indexed paths.
fn comparison_of(e: &Value) -> Option<(Path<'static>, &str)> {
    let literal = |v: &'_ Value| v.get("Value").and_then(Value::as_str).map(|_| ());
    let as_path = |v: &Value| -> Option<Path<'static>> {
        let (var, attrs) = path_of(v)?;
        [OWNER_PATH, ENVIRONMENT_PATH, GROUPS_PATH]
            .into_iter()
            .find(|p| p.var == var && p.attrs == attrs.as_slice())
    };
    if let Some(eq) = e.get("==") {
        let (left, right) = (eq.get("left")?, eq.get("right")?);
        let (path, value) = match (as_path(left), as_path(right)) {
            (Some(p), None) => (p, right),
            (None, Some(p)) => (p, left),
            _ => return None,
        };
        literal(value)?;
        if path == GROUPS_PATH {
            return None;
        }
        return Some((path, value.get("Value")?.as_str()?));
    }
    let contains = e.get("contains")?;
    let path = as_path(contains.get("left")?)?;
    let value = contains.get("right")?;
    literal(value)?;
    (path == GROUPS_PATH).then_some(())?;
    Some((path, value.get("Value")?.as_str()?))
}

/// The `has` tests before a comparison on `path`, as [`Guards`]; `None` when one of them could
/// error for a reason the index does not follow (a test on another path below the variable).
fn guards_on(tests: &[&Value], path: Path<'_>) -> Option<Guards> {
    let mut levels = Vec::with_capacity(tests.len());
    for test in tests {
        let (var, attrs) = has_test(test)?;
        let (tested, below) = attrs.split_last()?;
        if below.is_empty() {
            // `var has attr` never errors (the variable always exists).
            let level = (var == path.var && path.attrs.first() == Some(tested)).then_some(0);
            levels.push(level);
            continue;
        }
        // `var.a.b has c` reads `var.a.b`: only followed when it is a prefix of `path`.
        let prefix = path.attrs.get(..attrs.len())?;
        if var != path.var || prefix != attrs.as_slice() {
            return None;
        }
        levels.push(Some(below.len()));
    }
    Some(Guards(levels))
}

#[cfg(test)]
mod tests;
