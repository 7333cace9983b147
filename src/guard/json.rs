//! Strict JSON: one complete document, no duplicate keys, no keys that differ only in case.
//!
//! Built on serde_json's tokenizer through serde's `DeserializeSeed`/`Visitor` machinery (no
//! hand-written tokenizer). Parsers disagree on duplicate keys (first wins, last wins, error) and
//! Go's `encoding/json` matches member names case-insensitively, so a document with `"spec"` and
//! `"Spec"` could mean one thing here and another upstream; both are refused at any depth.
//!
//! Errors never carry input: serde_json messages can quote it, so only the category, line and
//! column are kept, plus a JSON pointer when every segment of it is a known schema member name.
//! [`Value`] deliberately has no `Debug`, so a parsed body cannot end up in a log by accident.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::error::Category;

use super::GuardError;

/// Member names of the ApiKey schema (docs/confluent-api.md §2). Only these may appear in an error pointer;
/// any other key is body content and could be a secret.
const KNOWN_MEMBERS: [&str; 14] = [
    "api_version",
    "kind",
    "id",
    "metadata",
    "spec",
    "display_name",
    "description",
    "secret",
    "owner",
    "resource",
    "resources",
    "environment",
    "related",
    "resource_name",
];

/// A parsed JSON document. Numbers and booleans keep no value: no decision reads them.
pub(super) enum Value<'a> {
    Null,
    Bool,
    Number,
    String(Cow<'a, str>),
    Array(Vec<Value<'a>>),
    Object(Vec<(Cow<'a, str>, Value<'a>)>),
}

/// Parses `body` as exactly one strict JSON document.
pub(super) fn parse(body: &[u8]) -> Result<Value<'_>, GuardError> {
    let violation = Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let seed = ValueSeed {
        violation: &violation,
        path: None,
    };
    let value = seed
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value));
    value.map_err(|error| to_guard_error(&error, violation.take()))
}

/// The case folding Go's `encoding/json` uses to match member names (`strings.EqualFold`
/// orbits): ASCII letters, plus the two non-ASCII runes whose orbit holds an ASCII letter,
/// KELVIN SIGN (`k`) and LATIN SMALL LETTER LONG S (`s`). Other non-ASCII runes are kept: they
/// can never match an (ASCII) schema member name.
pub(super) fn fold_char(c: char) -> char {
    match c {
        '\u{212A}' => 'K',
        '\u{017F}' => 'S',
        other => other.to_ascii_uppercase(),
    }
}

/// Whether two member names are equal under [`fold_char`].
pub(super) fn fold_eq(a: &str, b: &str) -> bool {
    // ASCII folding is part of Go's, and other bytes compare exactly: equal here means equal.
    if a.len() == b.len() && a.eq_ignore_ascii_case(b) {
        return true;
    }
    // Only KELVIN SIGN and LONG S fold onto ASCII letters; without non-ASCII there is no other way.
    if a.is_ascii() && b.is_ascii() {
        return false;
    }
    a.chars().map(fold_char).eq(b.chars().map(fold_char))
}

/// Members of one object checked by pairwise comparison before a folded-name index is built.
const LINEAR_SCAN_MEMBERS: usize = 16;

fn fold(key: &str) -> String {
    key.chars().map(fold_char).collect()
}

fn to_guard_error(error: &serde_json::Error, violation: Option<Violation>) -> GuardError {
    let (line, column) = (error.line(), error.column());
    match violation {
        Some(Violation { kind, pointer }) => GuardError::DuplicateKey {
            kind,
            pointer,
            line,
            column,
        },
        None => GuardError::InvalidJson {
            category: match error.classify() {
                Category::Syntax => "syntax error",
                Category::Eof => "unexpected end of input",
                Category::Data => "invalid value",
                Category::Io => "read error",
            },
            line,
            column,
        },
    }
}

/// What the visitor refused; recorded beside serde's error so no message text is parsed.
struct Violation {
    kind: &'static str,
    pointer: Option<String>,
}

/// One step of the path from the root to the value being parsed, borrowed from the stack.
struct Node<'a> {
    parent: Option<&'a Node<'a>>,
    segment: Segment<'a>,
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// The JSON pointer of `path` (+ `last`), if every key in it is a known member name and it is
/// not the root.
fn safe_pointer(path: Option<&Node<'_>>, last: Option<&str>) -> Option<String> {
    let mut segments = Vec::new();
    if let Some(last) = last {
        segments.push(Segment::Key(last));
    }
    let mut node = path;
    while let Some(current) = node {
        segments.push(match current.segment {
            Segment::Key(key) => Segment::Key(key),
            Segment::Index(index) => Segment::Index(index),
        });
        node = current.parent;
    }
    let mut pointer = String::new();
    for segment in segments.iter().rev() {
        match segment {
            Segment::Key(key) if KNOWN_MEMBERS.contains(key) => {
                pointer.push('/');
                pointer.push_str(key);
            }
            Segment::Key(_) => return None,
            Segment::Index(index) => {
                pointer.push('/');
                pointer.push_str(&index.to_string());
            }
        }
    }
    (!pointer.is_empty()).then_some(pointer)
}

// === impl ValueSeed ===

/// Deserializes one [`Value`], refusing duplicate and case-colliding keys below it.
struct ValueSeed<'a> {
    violation: &'a Cell<Option<Violation>>,
    path: Option<&'a Node<'a>>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value<'de>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Value<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value<'de>, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Value<'de>, E> {
        Ok(Value::Bool)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Value<'de>, E> {
        Ok(Value::Number)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Value<'de>, E> {
        Ok(Value::Number)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Value<'de>, E> {
        Ok(Value::Number)
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Value<'de>, E> {
        Ok(Value::String(Cow::Borrowed(value)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Value<'de>, E> {
        Ok(Value::String(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Value<'de>, E> {
        Ok(Value::String(Cow::Owned(value)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value<'de>, A::Error> {
        let mut items = Vec::new();
        loop {
            let node = Node {
                parent: self.path,
                segment: Segment::Index(items.len()),
            };
            let seed = ValueSeed {
                violation: self.violation,
                path: Some(&node),
            };
            match seq.next_element_seed(seed)? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value<'de>, A::Error> {
        let mut members: Vec<(Cow<'de, str>, Value<'de>)> = Vec::new();
        // Real bodies have a handful of members per object: compare against each earlier one
        // (no allocation, no hashing). A hostile object with many members switches to an index
        // of folded names, so the check stays linear in the body size.
        let mut folded: Option<HashMap<String, usize>> = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let folded_key = folded.as_ref().map(|_| fold(&key));
            let earlier = match (&folded, &folded_key) {
                (Some(index), Some(name)) => index.get(name).copied(),
                _ => members.iter().position(|(k, _)| fold_eq(k, &key)),
            };
            if let Some(first) = earlier {
                let first_key: &str = &members[first].0;
                let kind = if first_key == key {
                    "a duplicate key"
                } else {
                    "keys that differ only in letter case"
                };
                // Point at whichever spelling is a schema name, else at the enclosing object.
                let pointer = safe_pointer(self.path, Some(first_key))
                    .or_else(|| safe_pointer(self.path, Some(&key)))
                    .or_else(|| safe_pointer(self.path, None));
                self.violation.set(Some(Violation { kind, pointer }));
                return Err(de::Error::custom(kind));
            }
            let node = Node {
                parent: self.path,
                segment: Segment::Key(&key),
            };
            let value = map.next_value_seed(ValueSeed {
                violation: self.violation,
                path: Some(&node),
            })?;
            if let (Some(index), Some(name)) = (&mut folded, folded_key) {
                index.insert(name, members.len());
            } else if members.len() == LINEAR_SCAN_MEMBERS {
                folded = Some(
                    members
                        .iter()
                        .enumerate()
                        .map(|(i, (k, _))| (fold(k), i))
                        .chain(std::iter::once((fold(&key), members.len())))
                        .collect(),
                );
            }
            members.push((key, value));
        }
        Ok(Value::Object(members))
    }
}

/// A member name, borrowed from the body unless it contains escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value))
    }
}

#[cfg(test)]
mod tests;
