//! `@reason` templates: a policy's reason can name values of the request it denies, so the caller
//! reads "service account sa-orders already holds 3 API keys (limit 3)" instead of a parameter
//! name and a number copied by hand.
//!
//! Placeholders are `{name}`; `{{` and `}}` are literal braces. Request values: `{principal}`,
//! `{owner}`, `{owner_key_count}`, `{key_id}`, `{resource}`, `{resource_type}`, `{environment}`,
//! `{display_name}`, `{description}`; configured parameters: `{params.NAME}`, filled in at load
//! time. A value the request does not have renders as `unknown`. An unknown placeholder is a load
//! error, like a misspelt attribute in the policy itself.
//!
//! Rendering happens only for policies that matched, never for the others.

use std::fmt::Write as _;

use super::config::ParamValue;
use super::OrgInput;

/// Longest request value put into a reason; longer ones are cut with `…`.
const MAX_VALUE_CHARS: usize = 64;

/// What a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Principal,
    Owner,
    OwnerKeyCount,
    KeyId,
    Resource,
    ResourceType,
    Environment,
    DisplayName,
    Description,
}

/// The request-value placeholders, by name.
const FIELDS: [(&str, Field); 9] = [
    ("principal", Field::Principal),
    ("owner", Field::Owner),
    ("owner_key_count", Field::OwnerKeyCount),
    ("key_id", Field::KeyId),
    ("resource", Field::Resource),
    ("resource_type", Field::ResourceType),
    ("environment", Field::Environment),
    ("display_name", Field::DisplayName),
    ("description", Field::Description),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Value(Field),
}

/// A parsed `@reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReasonTemplate(Vec<Piece>);

impl ReasonTemplate {
    /// Parses `text`, filling in `{params.NAME}` from `params`.
    pub(crate) fn parse(text: &str, params: &[(String, ParamValue)]) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find(['{', '}']) {
            literal.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if rest[at..].starts_with("{{") {
                literal.push('{');
                rest = &rest[at + 2..];
            } else if rest[at..].starts_with("}}") {
                literal.push('}');
                rest = &rest[at + 2..];
            } else if rest[at..].starts_with('}') {
                return Err("a lone `}` in @reason (write `}}` for a literal brace)".into());
            } else {
                let end = after.find('}').ok_or_else(|| {
                    "an unclosed `{` in @reason (write `{{` for a literal brace)".to_owned()
                })?;
                let name = after[..end].trim();
                if let Some(param) = name.strip_prefix("params.") {
                    let value = params
                        .iter()
                        .find(|(n, _)| n == param)
                        .map(|(_, v)| display(v))
                        .ok_or_else(|| {
                            format!("@reason names `{{{name}}}`, but `{param}` is not in [policy.params]")
                        })?;
                    literal.push_str(&value);
                } else {
                    let field = FIELDS
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, f)| *f)
                        .ok_or_else(|| {
                            format!(
                                "unknown placeholder `{{{name}}}` in @reason; known: {}, {{params.NAME}}",
                                FIELDS
                                    .iter()
                                    .map(|(n, _)| format!("{{{n}}}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        })?;
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Value(field));
                }
                rest = &after[end + 1..];
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(ReasonTemplate(pieces))
    }

    /// The reason for one request.
    pub(crate) fn render(&self, input: &OrgInput<'_>) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Value(field) => push_value(&mut out, value(*field, input)),
            }
        }
        out
    }
}

fn value(field: Field, input: &OrgInput<'_>) -> Option<String> {
    let target = input.target_key.as_ref();
    let resource = input.resource.as_ref();
    match field {
        Field::Principal => Some(input.principal_id.to_owned()),
        Field::Owner => input
            .owner_id
            .or(target.and_then(|t| t.owner_id))
            .map(str::to_owned),
        Field::OwnerKeyCount => input.owner_key_count.map(|n| n.to_string()),
        Field::KeyId => input.key_id.or(target.map(|t| t.id)).map(str::to_owned),
        Field::Resource => resource
            .map(|r| r.id)
            .or(target.and_then(|t| t.resource_id))
            .map(str::to_owned),
        Field::ResourceType => resource.map(|r| r.resource_type.to_owned()),
        Field::Environment => resource.and_then(|r| r.environment).map(str::to_owned),
        Field::DisplayName => input
            .display_name
            .or(target.map(|t| t.display_name))
            .map(str::to_owned),
        Field::Description => input
            .description
            .or(target.map(|t| t.description))
            .map(str::to_owned),
    }
}

fn push_value(out: &mut String, value: Option<String>) {
    match value {
        None => out.push_str("unknown"),
        Some(v) if v.chars().count() > MAX_VALUE_CHARS => {
            out.extend(v.chars().take(MAX_VALUE_CHARS));
            out.push('…');
        }
        Some(v) => out.push_str(&v),
    }
}

/// A parameter as a reason shows it.
fn display(value: &ParamValue) -> String {
    match value {
        ParamValue::String(s) => s.clone(),
        ParamValue::Long(n) => n.to_string(),
        ParamValue::Bool(b) => b.to_string(),
        ParamValue::StringSet(v) => v.join(", "),
        ParamValue::LongSet(v) => v.iter().fold(String::new(), |mut s, n| {
            if !s.is_empty() {
                s.push_str(", ");
            }
            let _ = write!(s, "{n}");
            s
        }),
    }
}
