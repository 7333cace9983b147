//! Loading an organisational policy set: read the schema and the `*.cedar` files, generate the
//! config-dependent schema fragment, parse, check keygate's rules (forbid only, `@id`, `@reason`,
//! `@mode`, unique ids), validate strictly, and hash everything into a digest. The platform set
//! ([`load_platform`]) comes first; each team's set ([`read_team`], [`compile_team`]) is then
//! validated against the platform's schema plus the team's own patterns and parameters.
//!
//! Every problem is collected, so one `keygate check` run reports all of them as `file:line:
//! message`. Cedar reports locations as byte spans (through `miette`); they are mapped to 1-based
//! lines of the file the policy came from.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{Effect, Policy, PolicyId, PolicySet, Schema, ValidationMode, Validator};

use super::team::{self, Scope, TeamValues};
use miette::Diagnostic;
use regex::RegexSet;
use ring::digest;

use super::config::{OrgPolicyConfig, ParamValue, SCOPE_FILE, TEAM_FILE};
use super::position::{column_of, line_of};
use super::reason::ReasonTemplate;
use super::{LoadError, Mode, PolicyMeta, RESERVED_ID_PREFIX};

/// File extension of policy files.
const POLICY_EXTENSION: &str = "cedar";
/// Longest accepted policy id: ids become metric labels and log fields.
const MAX_POLICY_ID_LEN: usize = 100;
/// The annotations keygate understands. Anything else is rejected, so that a typo such as
/// `@mod("dry-run")` cannot silently leave a policy enforcing.
const KNOWN_ANNOTATIONS: [&str; 5] = ["id", "reason", "mode", "description", "pointer"];
/// Cedar's reserved words, which cannot be attribute names written as `a.b`.
const CEDAR_RESERVED: [&str; 9] = [
    "true", "false", "if", "then", "else", "in", "is", "like", "has",
];

/// The platform set as loaded, and what team sets are compiled against.
pub(super) struct Platform {
    pub(super) schema: Schema,
    pub(super) schema_text: String,
    pub(super) validator: Validator,
    pub(super) policies: PolicySet,
    pub(super) meta: HashMap<PolicyId, PolicyMeta>,
    pub(super) pattern_names: Vec<String>,
    pub(super) pattern_set: RegexSet,
    pub(super) digest: String,
    /// Hash of what a team set is compiled against (schema, patterns, params, modes): a team
    /// whose files did not change need not be compiled again while it stays the same.
    pub(super) compile_key: String,
}

/// A policy file as read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SourceFile {
    pub(super) path: PathBuf,
    pub(super) text: String,
}

/// Everything a team's set is made of, as read from its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TeamSources {
    pub(super) name: String,
    pub(super) dir: PathBuf,
    pub(super) scope_text: String,
    pub(super) team_text: Option<String>,
    pub(super) files: Vec<SourceFile>,
}

/// A team's set, compiled.
pub(super) struct CompiledTeam {
    pub(super) scope: Scope,
    pub(super) values: TeamValues,
    pub(super) pattern_names: Vec<String>,
    pub(super) pattern_set: Option<RegexSet>,
    pub(super) policies: PolicySet,
    pub(super) meta: HashMap<PolicyId, PolicyMeta>,
    pub(super) digest: String,
}

/// Loads and validates the platform set described by `cfg`.
pub(super) fn load_platform(cfg: &OrgPolicyConfig) -> Result<Platform, Vec<LoadError>> {
    let mut errors = Vec::new();

    let (pattern_names, pattern_set) =
        compile_patterns(&cfg.patterns, "policy.patterns", &mut errors);
    check_params(&cfg.params, &mut errors);

    let schema_path = cfg.schema_path();
    let schema_text = read(&schema_path, &mut errors);
    let schema = schema_text.as_deref().and_then(|text| {
        build_schema(&schema_path, text, &pattern_names, &cfg.params, &mut errors)
    });

    let files = read_policy_files(&cfg.dir, &mut errors);
    let mut policies = PolicySet::new();
    let mut meta: HashMap<PolicyId, PolicyMeta> = HashMap::new();
    for (index, file) in files.iter().enumerate() {
        parse_file(
            index,
            file,
            None,
            &cfg.params,
            &mut policies,
            &mut meta,
            &mut errors,
        );
    }

    // Overrides of team policies (`team/id`) are applied by the team's load.
    let mut overrides: Vec<(&String, &Mode)> = cfg
        .modes
        .iter()
        .filter(|(id, _)| !id.contains('/'))
        .collect();
    overrides.sort_by(|a, b| a.0.cmp(b.0));
    for (id, mode) in overrides {
        match meta.get_mut(&PolicyId::new(id)) {
            Some(m) => m.mode = *mode,
            None => errors.push(LoadError::Config {
                key: format!("policy.modes.{id}"),
                message: format!("no loaded policy has the id `{id}`"),
            }),
        }
    }

    let validator = schema.as_ref().map(|schema| Validator::new(schema.clone()));
    if let Some(validator) = &validator {
        validate(validator, &policies, &meta, &files, &mut errors);
    }

    let (Some(schema), Some(schema_text), Some(validator), Some(pattern_set), true) = (
        schema,
        schema_text,
        validator,
        pattern_set,
        errors.is_empty(),
    ) else {
        return Err(errors);
    };

    let digest = digest(&schema_text, &files, cfg);
    let compile_key = compile_key(&schema_text, cfg);
    Ok(Platform {
        schema,
        schema_text,
        validator,
        policies,
        meta,
        pattern_names,
        pattern_set,
        digest,
        compile_key,
    })
}

/// The team directories of `teams_dir`: every subdirectory whose name does not start with `.`,
/// sorted by name.
pub(super) fn team_dirs(teams_dir: &Path) -> Result<Vec<(String, PathBuf)>, LoadError> {
    let entries = std::fs::read_dir(teams_dir).map_err(|e| LoadError::Io {
        path: teams_dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut dirs: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            (!name.starts_with('.')).then_some((name, p))
        })
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// The files of the team directory `dir` (whose name is the team's).
pub(super) fn read_team(name: &str, dir: &Path) -> Result<TeamSources, Vec<LoadError>> {
    let mut errors = Vec::new();
    if !team::is_team_name(name) {
        errors.push(LoadError::Io {
            path: dir.to_path_buf(),
            message: format!(
                "`{name}` cannot name a team: use a lowercase letter, then lowercase letters, digits and `-` (at most 50), and not `{}`",
                team::PLATFORM_SET
            ),
        });
    }
    let scope_path = dir.join(SCOPE_FILE);
    let scope_text = match std::fs::read_to_string(&scope_path) {
        Ok(text) => Some(text),
        Err(e) => {
            errors.push(LoadError::Io {
                path: scope_path,
                message: format!(
                    "{e}: every directory of the teams directory is a team's set and needs a `{SCOPE_FILE}` saying whose requests it governs"
                ),
            });
            None
        }
    };
    let team_path = dir.join(TEAM_FILE);
    let team_text = match std::fs::read_to_string(&team_path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            errors.push(LoadError::Io {
                path: team_path,
                message: e.to_string(),
            });
            None
        }
    };
    let files = read_policy_files(dir, &mut errors);
    match scope_text {
        Some(scope_text) if errors.is_empty() => Ok(TeamSources {
            name: name.to_owned(),
            dir: dir.to_path_buf(),
            scope_text,
            team_text,
            files,
        }),
        _ => Err(errors),
    }
}

/// Compiles a team's set against the platform: its scope, its own patterns and parameters, and
/// its policies, validated against the platform schema with those added. Policy ids become
/// `<team>/<id>`.
pub(super) fn compile_team(
    sources: &TeamSources,
    platform: &Platform,
    cfg: &OrgPolicyConfig,
) -> Result<CompiledTeam, Vec<LoadError>> {
    let name = sources.name.as_str();
    let mut errors = Vec::new();
    let scope = team::parse_scope(&sources.dir.join(SCOPE_FILE), &sources.scope_text)
        .map_err(|e| errors.extend(e))
        .ok();
    let team_path = sources.dir.join(TEAM_FILE);
    let values = match &sources.team_text {
        Some(text) => team::parse_team_file(&team_path, text, name)
            .map_err(|e| errors.extend(e))
            .ok(),
        None => Some(TeamValues::default()),
    }
    .unwrap_or_default();
    let key = |kind: &str| format!("{}:{kind}", team_path.display());
    let (pattern_names, pattern_set) = if values.patterns.is_empty() {
        (Vec::new(), Some(None))
    } else {
        let (names, set) = compile_patterns(&values.patterns, &key("patterns"), &mut errors);
        (names, set.map(Some))
    };
    let all_params: Vec<(String, ParamValue)> =
        cfg.params.iter().chain(&values.params).cloned().collect();
    check_params(&values.params, &mut errors);

    // The platform schema, or one with the team's patterns and parameters added.
    let own_validator = if values.patterns.is_empty() && values.params.is_empty() {
        None
    } else {
        let all_names: Vec<String> = platform
            .pattern_names
            .iter()
            .chain(&pattern_names)
            .cloned()
            .collect();
        build_schema(
            &cfg.schema_path(),
            &platform.schema_text,
            &all_names,
            &all_params,
            &mut errors,
        )
        .map(Validator::new)
    };

    let mut policies = PolicySet::new();
    let mut meta: HashMap<PolicyId, PolicyMeta> = HashMap::new();
    for (index, file) in sources.files.iter().enumerate() {
        parse_file(
            index,
            file,
            Some(name),
            &all_params,
            &mut policies,
            &mut meta,
            &mut errors,
        );
    }
    let prefix = format!("{name}/");
    let mut overrides: Vec<(&String, &Mode)> = cfg
        .modes
        .iter()
        .filter(|(id, _)| id.starts_with(&prefix))
        .collect();
    overrides.sort_by(|a, b| a.0.cmp(b.0));
    for (id, mode) in overrides {
        match meta.get_mut(&PolicyId::new(id)) {
            Some(m) => m.mode = *mode,
            None => errors.push(LoadError::Config {
                key: format!("policy.modes.{id}"),
                message: format!(
                    "team `{name}` has no policy with the id `{}`",
                    &id[prefix.len()..]
                ),
            }),
        }
    }
    match (
        &own_validator,
        values.patterns.is_empty() && values.params.is_empty(),
    ) {
        (Some(validator), _) => validate(validator, &policies, &meta, &sources.files, &mut errors),
        (None, true) => validate(
            &platform.validator,
            &policies,
            &meta,
            &sources.files,
            &mut errors,
        ),
        (None, false) => {}
    }
    let (Some(scope), Some(pattern_set), true) = (scope, pattern_set, errors.is_empty()) else {
        return Err(errors);
    };
    Ok(CompiledTeam {
        scope,
        digest: team_digest(sources),
        values,
        pattern_names,
        pattern_set,
        policies,
        meta,
    })
}

fn read(path: &Path, errors: &mut Vec<LoadError>) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) => {
            errors.push(LoadError::Io {
                path: path.to_path_buf(),
                message: e.to_string(),
            });
            None
        }
    }
}

/// Reads every `*.cedar` file directly in `dir`, sorted by name.
fn read_policy_files(dir: &Path, errors: &mut Vec<LoadError>) -> Vec<SourceFile> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(LoadError::Io {
                path: dir.to_path_buf(),
                message: e.to_string(),
            });
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == POLICY_EXTENSION))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| read(&path, errors).map(|text| SourceFile { path, text }))
        .collect()
}

/// Is `name` usable as a record attribute written `a.name` in a policy?
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !CEDAR_RESERVED.contains(&name)
        && !name.starts_with("__cedar")
}

fn compile_patterns(
    patterns: &[(String, String)],
    config_key: &str,
    errors: &mut Vec<LoadError>,
) -> (Vec<String>, Option<RegexSet>) {
    let mut names = Vec::with_capacity(patterns.len());
    let mut ok = true;
    for (name, pattern) in patterns {
        let key = format!("{config_key}.{name}");
        if !is_identifier(name) {
            ok = false;
            errors.push(LoadError::Config {
                key,
                message: format!(
                    "`{name}` is not a Cedar identifier ([A-Za-z_][A-Za-z0-9_]*, not a reserved word)"
                ),
            });
            continue;
        }
        if names.contains(name) {
            ok = false;
            errors.push(LoadError::Config {
                key,
                message: format!("pattern `{name}` is configured twice"),
            });
            continue;
        }
        if let Err(e) = regex::Regex::new(pattern) {
            ok = false;
            errors.push(LoadError::Config {
                key,
                message: format!("invalid regular expression: {}", one_line(&e.to_string())),
            });
        }
        names.push(name.clone());
    }
    if !ok {
        return (names, None);
    }
    match RegexSet::new(patterns.iter().map(|(_, p)| p.as_str())) {
        Ok(set) => (names, Some(set)),
        Err(e) => {
            errors.push(LoadError::Config {
                key: config_key.into(),
                message: format!("cannot compile the patterns: {}", one_line(&e.to_string())),
            });
            (names, None)
        }
    }
}

fn check_params(params: &[(String, ParamValue)], errors: &mut Vec<LoadError>) {
    let mut seen = HashSet::new();
    for (name, _) in params {
        if !is_identifier(name) {
            errors.push(LoadError::Config {
                key: format!("policy.params.{name}"),
                message: format!(
                    "`{name}` is not a Cedar identifier ([A-Za-z_][A-Za-z0-9_]*, not a reserved word)"
                ),
            });
        } else if !seen.insert(name.as_str()) {
            errors.push(LoadError::Config {
                key: format!("policy.params.{name}"),
                message: format!("parameter `{name}` is configured twice"),
            });
        }
    }
}

/// The schema fragment generated from the config: the `PatternMatches` and `Params` records.
fn generated_fragment(pattern_names: &[String], params: &[(String, ParamValue)]) -> String {
    let mut out = String::from(
        "// Generated by keygate from [policy.patterns] and [policy.params].\ntype PatternMatches = {",
    );
    for name in pattern_names {
        let _ = write!(out, " \"{name}\": Bool,");
    }
    out.push_str(" };\ntype Params = {");
    for (name, value) in params {
        let _ = write!(out, " \"{name}\": {},", value.cedar_type());
    }
    out.push_str(" };\n");
    out
}

/// Parses the base schema with the generated fragment appended (one source text, so Cedar's
/// spans map back to the base file's lines, or to the config for the generated part).
fn build_schema(
    path: &Path,
    base: &str,
    pattern_names: &[String],
    params: &[(String, ParamValue)],
    errors: &mut Vec<LoadError>,
) -> Option<Schema> {
    let mut text = String::with_capacity(base.len() + 256);
    text.push_str(base);
    text.push('\n');
    let generated_from = text.len();
    text.push_str(&generated_fragment(pattern_names, params));
    match Schema::from_cedarschema_str(&text) {
        Ok((schema, _warnings)) => Some(schema),
        Err(e) => {
            let message = diagnostic_message(&e);
            match first_offset(&e) {
                Some(offset) if offset < generated_from => errors.push(LoadError::Source {
                    path: path.to_path_buf(),
                    line: line_of(base, offset),
                    column: Some(column_of(base, offset)),
                    message,
                }),
                Some(_) => errors.push(LoadError::Config {
                    key: "policy.patterns/policy.params".into(),
                    message: format!("the schema generated from the config is invalid: {message}"),
                }),
                None => errors.push(LoadError::Io {
                    path: path.to_path_buf(),
                    message,
                }),
            }
            None
        }
    }
}

/// Parses one file and moves its policies, renamed to their `@id` (`<team>/<id>` in a team's
/// set), into `policies`.
fn parse_file(
    index: usize,
    file: &SourceFile,
    team: Option<&str>,
    params: &[(String, ParamValue)],
    policies: &mut PolicySet,
    meta: &mut HashMap<PolicyId, PolicyMeta>,
    errors: &mut Vec<LoadError>,
) {
    let set = match PolicySet::from_str(&file.text) {
        Ok(set) => set,
        Err(errs) => {
            for e in errs.iter() {
                let offset = first_offset(e);
                let (offset, message) = match offset.and_then(|o| missing_semicolon(&file.text, o))
                {
                    Some(end) => (
                        Some(end),
                        "missing `;` at the end of this policy (every policy ends with `;`)"
                            .to_owned(),
                    ),
                    None => (offset, diagnostic_message(e)),
                };
                errors.push(LoadError::Source {
                    path: file.path.clone(),
                    line: offset.map_or(1, |o| line_of(&file.text, o)),
                    column: offset.map(|o| column_of(&file.text, o)),
                    message,
                });
            }
            return;
        }
    };
    let starts = statement_starts(&file.text);
    // Cedar names the statements of a file `policy0`, `policy1`, … in order.
    let line_of_statement = |id: &PolicyId| -> usize {
        AsRef::<str>::as_ref(id)
            .strip_prefix("policy")
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| starts.get(n))
            .map_or(1, |&offset| line_of(&file.text, offset))
    };
    let error = |line: usize, message: String| LoadError::Source {
        path: file.path.clone(),
        line,
        column: None,
        message,
    };

    for template in set.templates() {
        errors.push(error(
            line_of_statement(template.id()),
            "templates (`?principal`, `?resource`) are not supported in organisation policies"
                .into(),
        ));
    }

    let mut in_order: Vec<&Policy> = set.policies().collect();
    in_order.sort_by_key(|p| line_of_statement(p.id()));
    for policy in in_order {
        let line = line_of_statement(policy.id());
        let before = errors.len();
        if policy.effect() == Effect::Permit {
            errors.push(error(
                line,
                "`permit` is not allowed in organisation policies: keygate permits what layer 1 \
                 (the RBAC matrix) allows, and policies can only narrow that with `forbid`"
                    .into(),
            ));
        }
        for (key, _) in policy.annotations() {
            if !KNOWN_ANNOTATIONS.contains(&key) {
                errors.push(error(
                    line,
                    format!(
                        "unknown annotation `@{key}`: expected @id, @reason, @mode, @pointer or @description"
                    ),
                ));
            }
        }
        let id = match policy.annotation("id") {
            None => {
                errors.push(error(line, "policy has no `@id(\"…\")` annotation".into()));
                None
            }
            Some(id) if !is_policy_id(id) => {
                errors.push(error(
                    line,
                    format!(
                        "invalid policy id `{id}`: use 1 to {MAX_POLICY_ID_LEN} characters from \
                         [A-Za-z0-9._-], starting with a letter or digit"
                    ),
                ));
                None
            }
            Some(id) if id.starts_with(RESERVED_ID_PREFIX) => {
                errors.push(error(
                    line,
                    format!("policy id `{id}`: the prefix `{RESERVED_ID_PREFIX}` is reserved"),
                ));
                None
            }
            Some(id) => Some(id),
        };
        let reason = match policy.annotation("reason") {
            Some(r) if !r.trim().is_empty() => Some(r),
            _ => {
                errors.push(error(
                    line,
                    format!(
                        "policy {}has no `@reason(\"…\")` annotation (the reason is shown to the denied caller)",
                        id.map(|i| format!("`{i}` ")).unwrap_or_default()
                    ),
                ));
                None
            }
        };
        let template = reason.and_then(|r| match ReasonTemplate::parse(r, params) {
            Ok(template) => Some(template),
            Err(message) => {
                errors.push(error(line, message));
                None
            }
        });
        let pointer = match policy.annotation("pointer") {
            None => Some(None),
            Some(p) if is_body_pointer(p) => Some(Some(p.to_owned())),
            Some(p) => {
                errors.push(error(
                    line,
                    format!(
                        "invalid `@pointer(\"{p}\")`: expected a JSON pointer into the request body, such as \"/spec/display_name\""
                    ),
                ));
                None
            }
        };
        let mode = match policy.annotation("mode") {
            None => Some(Mode::Enforce),
            Some(m) => match Mode::parse(m) {
                Some(mode) => Some(mode),
                None => {
                    errors.push(error(
                        line,
                        format!("invalid `@mode(\"{m}\")`: expected \"enforce\" or \"dry-run\""),
                    ));
                    None
                }
            },
        };
        let (Some(id), Some(reason), Some(template), Some(pointer), Some(mode)) =
            (id, reason, template, pointer, mode)
        else {
            continue;
        };
        let qualified = match team {
            Some(team) => format!("{team}/{id}"),
            None => id.to_owned(),
        };
        let policy_id = PolicyId::new(&qualified);
        if let Some(first) = meta.get(&policy_id) {
            errors.push(error(
                line,
                format!(
                    "duplicate policy id `{id}`: already used at {}:{}",
                    first.file.display(),
                    first.line
                ),
            ));
            continue;
        }
        if errors.len() > before {
            continue;
        }
        if let Err(e) = policies.add(policy.new_id(policy_id.clone())) {
            errors.push(error(line, e.to_string()));
            continue;
        }
        meta.insert(
            policy_id,
            PolicyMeta {
                id: qualified,
                team: team.map(Into::into),
                reason: reason.to_owned(),
                template,
                pointer,
                mode,
                file: file.path.clone(),
                file_index: index,
                line,
            },
        );
    }
}

/// A JSON pointer (RFC 6901) into a request body: `/spec/…`, plain member names.
fn is_body_pointer(pointer: &str) -> bool {
    pointer.len() <= 200
        && pointer.starts_with("/spec")
        && pointer.split('/').skip(1).all(|seg| {
            !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

fn is_policy_id(id: &str) -> bool {
    id.len() <= MAX_POLICY_ID_LEN
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Strict validation; every error and warning becomes a `file:line` load error.
fn validate(
    validator: &Validator,
    policies: &PolicySet,
    meta: &HashMap<PolicyId, PolicyMeta>,
    files: &[SourceFile],
    errors: &mut Vec<LoadError>,
) {
    let result = validator.validate(policies, ValidationMode::Strict);
    // (file, line, column, message)
    let mut found: Vec<(usize, usize, Option<usize>, String)> = Vec::new();
    let mut locate = |id: &PolicyId, diag: &dyn Diagnostic, message: String| {
        let Some(m) = meta.get(id) else {
            return;
        };
        let file = files.get(m.file_index);
        let position = first_offset(diag)
            .and_then(|o| file.map(|f| (line_of(&f.text, o), Some(column_of(&f.text, o)))));
        let (line, column) = position.unwrap_or((m.line, None));
        found.push((m.file_index, line, column, message));
    };
    for e in result.validation_errors() {
        locate(e.policy_id(), e, diagnostic_message(e));
    }
    // Warnings such as "policy is impossible" are usually consequences of an error in the same
    // policy (an unknown entity type or action); report them only for policies without errors.
    let with_errors: HashSet<&PolicyId> =
        result.validation_errors().map(|e| e.policy_id()).collect();
    for w in result.validation_warnings() {
        if !with_errors.contains(w.policy_id()) {
            locate(w.policy_id(), w, diagnostic_message(w));
        }
    }
    // The validator checks a policy once per action and per principal type it may apply to, so
    // one typo comes back several times, differing only in the action, the entity type or the
    // suggestion: report each problem once.
    let mut merged: BTreeMap<(usize, usize, String), Merged> = BTreeMap::new();
    for (file_index, line, column, message) in found {
        let parts = MessageParts::split(&message);
        let entry = merged
            .entry((file_index, line, parts.stem.clone()))
            .or_insert_with(|| Merged {
                column,
                copies: 0,
                original: message.clone(),
                parts: MessageParts {
                    stem: parts.stem.clone(),
                    ..MessageParts::default()
                },
            });
        entry.column = match (entry.column, column) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        entry.copies += 1;
        entry.parts.actions.extend(parts.actions);
        entry.parts.entity_types.extend(parts.entity_types);
        entry.parts.suggestions.extend(parts.suggestions);
    }
    for ((file_index, line, _), mut m) in merged {
        let message = if m.copies == 1 {
            m.original
        } else {
            m.parts.render()
        };
        if let Some(f) = files.get(file_index) {
            errors.push(LoadError::Source {
                path: f.path.clone(),
                line,
                column: m.column,
                message,
            });
        }
    }
}

/// Validation problems found at one place with one stem.
struct Merged {
    column: Option<usize>,
    copies: usize,
    original: String,
    parts: MessageParts,
}

/// A validator message taken apart: what varies between the copies of one problem.
#[derive(Default)]
struct MessageParts {
    /// The message without them; [`ENTITY_MARK`] where the entity type was, [`ACTION_MARK`]
    /// where the action was.
    stem: String,
    actions: Vec<String>,
    entity_types: Vec<String>,
    suggestions: Vec<String>,
}

/// Stands in a stem for the entity type it was about.
const ENTITY_MARK: char = '\u{1}';
/// Stands in a stem for the action it was about.
const ACTION_MARK: char = '\u{2}';
/// How Cedar names the entity type an attribute was looked up on.
const ENTITY_MARKER: &str = " on entity type `";
/// How a suggestion appears at the end of a message.
const SUGGESTION_MARKER: &str = " (did you mean `";

impl MessageParts {
    fn split(message: &str) -> MessageParts {
        let mut parts = MessageParts::default();
        let mut stem = message.to_owned();
        if let Some((before, name, after)) = cut(&stem, ACTION_MARKER, "\"") {
            parts.actions.push(name.to_owned());
            stem = format!("{before}{ACTION_MARK}{after}");
        }
        if let Some((before, name, after)) = cut(&stem, ENTITY_MARKER, "`") {
            parts.entity_types.push(name.to_owned());
            stem = format!("{before}{ENTITY_MARK}{after}");
        }
        if let Some((before, name, after)) = cut(&stem, SUGGESTION_MARKER, "`?)") {
            parts.suggestions.push(name.to_owned());
            stem = format!("{before}{after}");
        }
        parts.stem = stem;
        parts
    }

    /// One message for every copy.
    fn render(&mut self) -> String {
        for list in [
            &mut self.actions,
            &mut self.entity_types,
            &mut self.suggestions,
        ] {
            list.sort();
            list.dedup();
        }
        let quoted = |names: &[String]| {
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let entity = match self.entity_types.as_slice() {
            [] => String::new(),
            [one] => format!("{ENTITY_MARKER}{one}`"),
            many => format!(" on entity types {}", quoted(many)),
        };
        let mut message = self.stem.replace(ENTITY_MARK, &entity);
        match self.suggestions.as_slice() {
            [] => {}
            [one] => {
                let _ = write!(message, "{SUGGESTION_MARKER}{one}`?)");
            }
            many => {
                let _ = write!(message, " (did you mean one of {}?)", quoted(many));
            }
        }
        match self.actions.as_slice() {
            [one] => message = message.replace(ACTION_MARK, &format!("{ACTION_MARKER}{one}\"")),
            many => {
                message = message.replace(ACTION_MARK, "");
                if !many.is_empty() {
                    let _ = write!(message, " (for actions {})", many.join(", "));
                }
            }
        }
        message
    }
}

/// `(before, inside, after)` of the first `open…close` in `s`.
fn cut<'a>(s: &'a str, open: &str, close: &str) -> Option<(&'a str, &'a str, &'a str)> {
    let start = s.find(open)?;
    let inside_start = start + open.len();
    let len = s.get(inside_start..)?.find(close)?;
    Some((
        s.get(..start)?,
        s.get(inside_start..inside_start + len)?,
        s.get(inside_start + len + close.len()..)?,
    ))
}

/// Marker Cedar puts before the action a validation message is about.
const ACTION_MARKER: &str = " for Action::\"";

/// Cedar's message plus its help text, on one line.
fn diagnostic_message(diag: &dyn Diagnostic) -> String {
    let mut message = one_line(&diag.to_string());
    if let Some(help) = diag.help() {
        let _ = write!(message, " ({})", one_line(&help.to_string()));
    }
    message
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Byte offset of the first labelled span of a diagnostic (or of a related one).
fn first_offset(diag: &dyn Diagnostic) -> Option<usize> {
    if let Some(offset) = diag
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|l| l.offset())
    {
        return Some(offset);
    }
    diag.related()
        .and_then(|mut related| related.find_map(first_offset))
}

/// When Cedar reports a parse error at the `@` of the next policy's first annotation (or at the
/// end of the file) because the policy before it has no closing `;`, the offset just after that
/// policy's last character, where the `;` belongs.
fn missing_semicolon(text: &str, offset: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let at_next_policy = bytes.get(offset) == Some(&b'@');
    let at_end = text
        .get(offset..)
        .is_some_and(|rest| rest.trim().is_empty());
    if !at_next_policy && !at_end {
        return None;
    }
    // The last significant byte before `offset`, skipping whitespace and `//` comments.
    let before = text.get(..offset)?;
    let mut last = None;
    for line in before.lines() {
        let code = match line.find("//") {
            Some(comment) if !in_string(line, comment) => &line[..comment],
            _ => line,
        };
        if !code.trim().is_empty() {
            let line_start = line.as_ptr() as usize - before.as_ptr() as usize;
            last = Some(line_start + code.trim_end().len());
        }
    }
    let end = last?;
    // After a complete policy (`;`) the error is something else; after an annotation's `)` the
    // policy is missing altogether, not its `;`.
    match bytes.get(end.checked_sub(1)?) {
        Some(b'}') => Some(end),
        Some(b')') if !annotation_line(before, end) => Some(end),
        _ => None,
    }
}

/// Whether the code line ending at byte `end` of `text` is an annotation (`@name(…)`).
fn annotation_line(text: &str, end: usize) -> bool {
    let start = text
        .get(..end)
        .and_then(|t| t.rfind('\n'))
        .map_or(0, |p| p + 1);
    text.get(start..end)
        .is_some_and(|l| l.trim_start().starts_with('@'))
}

/// Whether byte `at` of `line` is inside a string literal.
fn in_string(line: &str, at: usize) -> bool {
    let mut inside = false;
    let mut escaped = false;
    for b in line.as_bytes().iter().take(at) {
        match b {
            b'\\' if inside => escaped = !escaped,
            b'"' if !escaped => inside = !inside,
            _ => escaped = false,
        }
    }
    inside
}

/// Byte offsets where each top-level statement (policy) of a Cedar file begins: the first
/// character that is not whitespace or a `//` comment after the start or after a `;` outside a
/// string. Cedar has no other use of `;` and no other comment form.
pub(super) fn statement_starts(text: &str) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    let mut at_boundary = true;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            c if c.is_ascii_whitespace() => {}
            _ => {
                if at_boundary {
                    starts.push(i);
                    at_boundary = false;
                }
                if c == b'"' {
                    i += 1;
                    while i < bytes.len() && bytes[i] != b'"' {
                        if bytes[i] == b'\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                } else if c == b';' {
                    at_boundary = true;
                }
            }
        }
        i += 1;
    }
    starts
}

/// SHA-256 (hex) of a team's files: the scope, the team file and every policy file (by name and
/// content).
fn team_digest(sources: &TeamSources) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut field = |tag: &str, value: &[u8]| {
        ctx.update(tag.as_bytes());
        ctx.update(&(value.len() as u64).to_be_bytes());
        ctx.update(value);
    };
    field("team", sources.name.as_bytes());
    field("scope", sources.scope_text.as_bytes());
    if let Some(text) = &sources.team_text {
        field("values", text.as_bytes());
    }
    for f in &sources.files {
        let name = f
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        field("file", name.as_bytes());
        field("text", f.text.as_bytes());
    }
    hex(ctx.finish())
}

/// SHA-256 (hex) of what team sets are compiled against: the base schema, the patterns, the
/// params and the mode overrides.
fn compile_key(schema_text: &str, cfg: &OrgPolicyConfig) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut field = |tag: &str, value: &[u8]| {
        ctx.update(tag.as_bytes());
        ctx.update(&(value.len() as u64).to_be_bytes());
        ctx.update(value);
    };
    field("schema", schema_text.as_bytes());
    for (name, pattern) in &cfg.patterns {
        field("pattern", name.as_bytes());
        field("regex", pattern.as_bytes());
    }
    for (name, value) in &cfg.params {
        field("param", name.as_bytes());
        field("value", value.canonical().as_bytes());
    }
    let modes: BTreeMap<_, _> = cfg.modes.iter().collect();
    for (id, mode) in modes {
        field("mode", id.as_bytes());
        field("is", mode.as_str().as_bytes());
    }
    hex(ctx.finish())
}

/// SHA-256 (hex) of the platform digest and every team's (by name): the digest of the whole
/// organisation policy set.
pub(super) fn combined_digest<'a>(
    platform: &str,
    teams: impl Iterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"platform=");
    ctx.update(platform.as_bytes());
    for (name, digest) in teams {
        ctx.update(b";team=");
        ctx.update(name.as_bytes());
        ctx.update(b":");
        ctx.update(digest.as_bytes());
    }
    hex(ctx.finish())
}

fn hex(hash: digest::Digest) -> String {
    hash.as_ref()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// SHA-256 (hex) of everything that determines decisions: the base schema, every policy file
/// (by name and content), and the patterns, params, mode overrides and group mappings.
fn digest(schema_text: &str, files: &[SourceFile], cfg: &OrgPolicyConfig) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut field = |tag: &str, value: &[u8]| {
        ctx.update(tag.as_bytes());
        ctx.update(&(value.len() as u64).to_be_bytes());
        ctx.update(value);
    };
    field("schema", schema_text.as_bytes());
    for f in files {
        let name = f
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        field("file", name.as_bytes());
        field("text", f.text.as_bytes());
    }
    for (name, pattern) in &cfg.patterns {
        field("pattern", name.as_bytes());
        field("regex", pattern.as_bytes());
    }
    for (name, value) in &cfg.params {
        field("param", name.as_bytes());
        field("value", value.canonical().as_bytes());
    }
    let modes: BTreeMap<_, _> = cfg.modes.iter().collect();
    for (id, mode) in modes {
        field("mode", id.as_bytes());
        field("is", mode.as_str().as_bytes());
    }
    let groups: BTreeMap<_, _> = cfg.groups.iter().collect();
    for (principal, list) in groups {
        field("groups", principal.as_bytes());
        for g in list {
            field("group", g.as_bytes());
        }
    }
    hex(ctx.finish())
}

#[cfg(test)]
mod tests;
