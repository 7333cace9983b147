//! The `[policy]` config keys of the organisational policies: the raw serde mirror and the typed
//! [`OrgPolicyConfig`] that [`super::OrgPolicies::load`] takes.
//!
//! Only shape and types are checked here; patterns are compiled and names checked at load time,
//! so that every problem is reported in one list.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::LoadError;

/// The file that makes a directory a team set.
pub const SCOPE_FILE: &str = "scope.toml";
/// The team's own patterns and parameters (optional).
pub const TEAM_FILE: &str = "team.toml";

/// Default policy directory, relative to the config file: where the example set ships.
pub const DEFAULT_POLICY_DIR: &str = "policies";
/// Default base schema file name inside the policy directory.
pub const DEFAULT_SCHEMA_FILE: &str = "keygate.cedarschema";
/// Default directory of policy test files inside the policy directory.
pub const DEFAULT_TESTS_DIR: &str = "tests";

/// Whether a policy's matches deny the request or are only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// A match denies the request (the default).
    #[default]
    Enforce,
    /// A match allows the request but is reported as "would deny".
    DryRun,
}

impl Mode {
    /// The spelling used in `@mode("…")` and in config: `enforce` or `dry-run`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::DryRun => "dry-run",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Mode> {
        match s {
            "enforce" => Some(Mode::Enforce),
            "dry-run" => Some(Mode::DryRun),
            _ => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A configured constant, visible to policies as `context.params.<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    /// Cedar `String`.
    String(String),
    /// Cedar `Long`.
    Long(i64),
    /// Cedar `Bool`.
    Bool(bool),
    /// Cedar `Set<String>`.
    StringSet(Vec<String>),
    /// Cedar `Set<Long>`.
    LongSet(Vec<i64>),
}

impl ParamValue {
    /// The Cedar schema type of this value.
    pub(crate) fn cedar_type(&self) -> &'static str {
        match self {
            ParamValue::String(_) => "String",
            ParamValue::Long(_) => "Long",
            ParamValue::Bool(_) => "Bool",
            ParamValue::StringSet(_) => "Set<String>",
            ParamValue::LongSet(_) => "Set<Long>",
        }
    }

    /// A stable text form, for the revision hash.
    pub(crate) fn canonical(&self) -> String {
        match self {
            ParamValue::String(s) => format!("s:{s:?}"),
            ParamValue::Long(n) => format!("l:{n}"),
            ParamValue::Bool(b) => format!("b:{b}"),
            ParamValue::StringSet(v) => format!("S:{v:?}"),
            ParamValue::LongSet(v) => format!("L:{v:?}"),
        }
    }

    /// Converts a TOML value; `None` for anything without a Cedar counterpart.
    pub(crate) fn from_toml(value: &toml::Value) -> Option<ParamValue> {
        match value {
            toml::Value::String(s) => Some(ParamValue::String(s.clone())),
            toml::Value::Integer(n) => Some(ParamValue::Long(*n)),
            toml::Value::Boolean(b) => Some(ParamValue::Bool(*b)),
            toml::Value::Array(items) => {
                if items.iter().all(toml::Value::is_str) {
                    Some(ParamValue::StringSet(
                        items
                            .iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect(),
                    ))
                } else if items.iter().all(toml::Value::is_integer) {
                    Some(ParamValue::LongSet(
                        items.iter().filter_map(toml::Value::as_integer).collect(),
                    ))
                } else {
                    None
                }
            }
            _ => None,
        }
    }
}

/// What [`super::OrgPolicies::load`] needs: where the files are and the configured values.
#[derive(Debug, Clone, Default)]
pub struct OrgPolicyConfig {
    /// Directory of `*.cedar` files (not recursive; `tests/` below it holds policy tests).
    pub dir: PathBuf,
    /// The base schema; `None` means `<dir>/keygate.cedarschema`.
    pub schema: Option<PathBuf>,
    /// Named regular expressions (name, pattern), see `policies/policy.example.toml`.
    pub patterns: Vec<(String, String)>,
    /// Named constants for `context.params`.
    pub params: Vec<(String, ParamValue)>,
    /// Mode overrides by policy id; they win over `@mode` annotations.
    pub modes: HashMap<String, Mode>,
    /// Extra groups by principal id, merged into the identity stage's groups.
    pub groups: HashMap<String, Vec<String>>,
    /// The directory of team policy sets: every subdirectory holding a `scope.toml` is one team's
    /// set (see `team`). `None`: no team sets.
    pub teams_dir: Option<PathBuf>,
}

impl OrgPolicyConfig {
    /// A config for `dir` with nothing else configured.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        OrgPolicyConfig {
            dir: dir.into(),
            ..OrgPolicyConfig::default()
        }
    }

    /// The base schema file in effect.
    pub fn schema_path(&self) -> PathBuf {
        self.schema
            .clone()
            .unwrap_or_else(|| self.dir.join(DEFAULT_SCHEMA_FILE))
    }

    /// The directory of policy test files (`<dir>/tests`).
    pub fn tests_dir(&self) -> PathBuf {
        self.dir.join(DEFAULT_TESTS_DIR)
    }

    /// The files a load reads besides the schema, sorted: the `*.cedar` files of the policy
    /// directory, and of every team directory its `scope.toml`, `team.toml` and `*.cedar` files
    /// (whether they exist or not, for the first two, so that creating one is a change).
    pub fn policy_files(&self) -> Vec<PathBuf> {
        let listed = |dir: &Path, extension: &str| -> Vec<PathBuf> {
            let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == extension))
                        .collect()
                })
                .unwrap_or_default();
            found.sort();
            found
        };
        let mut files = listed(&self.dir, "cedar");
        if let Some(teams) = &self.teams_dir {
            let mut dirs: Vec<PathBuf> = std::fs::read_dir(teams)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| {
                            p.is_dir()
                                && !p
                                    .file_name()
                                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                        })
                        .collect()
                })
                .unwrap_or_default();
            dirs.sort();
            for dir in dirs {
                files.push(dir.join(SCOPE_FILE));
                files.push(dir.join(TEAM_FILE));
                files.extend(listed(&dir, "cedar"));
            }
        }
        files
    }

    /// Reads the `[policy]` table of a TOML document (such as `policies/policy.example.toml`);
    /// relative paths are resolved against `base_dir`. A document without `[policy]` gives the
    /// defaults.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Self, Vec<LoadError>> {
        #[derive(Deserialize)]
        struct Document {
            #[serde(default)]
            policy: Option<RawOrgPolicyConfig>,
        }
        let doc: Document = toml::from_str(text).map_err(|e| {
            vec![LoadError::Config {
                key: "policy".into(),
                message: e.message().to_owned(),
            }]
        })?;
        doc.policy.unwrap_or_default().resolve(base_dir)
    }
}

/// The `[policy]` keys of the organisational policies exactly as written in the config file.
///
/// The lead's config module can embed it (`#[serde(flatten)]` is not compatible with
/// `deny_unknown_fields`, so nest it or copy the fields) and call [`RawOrgPolicyConfig::resolve`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOrgPolicyConfig {
    /// `dir`: the policy directory.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// `schema`: the base schema file.
    #[serde(default)]
    pub schema: Option<PathBuf>,
    /// `[policy.patterns]`: name → regular expression.
    #[serde(default)]
    pub patterns: BTreeMap<String, String>,
    /// `[policy.params]`: name → string, integer, boolean or array of either.
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
    /// `[policy.modes]`: policy id → `enforce` | `dry-run`.
    #[serde(default)]
    pub modes: BTreeMap<String, Mode>,
    /// `[policy.groups]`: principal id → extra groups.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    /// `teams_dir`: the directory of team policy sets.
    #[serde(default)]
    pub teams_dir: Option<PathBuf>,
}

impl RawOrgPolicyConfig {
    /// Types the values and resolves relative paths against `base_dir` (the config file's
    /// directory).
    pub fn resolve(self, base_dir: &Path) -> Result<OrgPolicyConfig, Vec<LoadError>> {
        let mut errors = Vec::new();
        let mut params = Vec::with_capacity(self.params.len());
        for (name, value) in &self.params {
            match ParamValue::from_toml(value) {
                Some(v) => params.push((name.clone(), v)),
                None => errors.push(LoadError::Config {
                    key: format!("policy.params.{name}"),
                    message:
                        "expected a string, integer, boolean, or an array of strings or of integers"
                            .into(),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let dir = base_dir.join(self.dir.unwrap_or_else(|| DEFAULT_POLICY_DIR.into()));
        Ok(OrgPolicyConfig {
            dir,
            schema: self.schema.map(|s| base_dir.join(s)),
            patterns: self.patterns.into_iter().collect(),
            params,
            modes: self.modes.into_iter().collect(),
            groups: self.groups.into_iter().collect(),
            teams_dir: self.teams_dir.map(|d| base_dir.join(d)),
        })
    }
}

#[cfg(test)]
mod tests;
