//! Audit test support: the JSON Schema check, reading an audit file, create bodies.

use std::path::Path;
use std::sync::OnceLock;

use serde_json::Value;

const SCHEMA: &str = include_str!("../../../schemas/audit-event.schema.json");

/// The compiled schema, shared by every test of the binary.
fn schema() -> &'static (boon::Schemas, boon::SchemaIndex) {
    static SCHEMA_INDEX: OnceLock<(boon::Schemas, boon::SchemaIndex)> = OnceLock::new();
    SCHEMA_INDEX.get_or_init(|| {
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler.enable_format_assertions();
        let schema: Value = serde_json::from_str(SCHEMA).unwrap();
        compiler
            .add_resource("audit-event.schema.json", schema)
            .unwrap();
        let index = compiler
            .compile("audit-event.schema.json", &mut schemas)
            .unwrap();
        (schemas, index)
    })
}

/// Panics unless `event` matches `schemas/audit-event.schema.json`.
pub fn assert_valid(event: &Value) {
    let (schemas, index) = schema();
    if let Err(e) = schemas.validate(event, *index) {
        panic!("audit event does not match the schema: {e:#}\n{event}");
    }
}

/// Parses JSON Lines, validating every line against the schema.
pub fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {line}"));
            assert_valid(&event);
            event
        })
        .collect()
}

/// Every complete record of an audit file, validated.
pub fn read_events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // A torn final line (no newline) is not a record.
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    parse_lines(complete)
}

/// A create body for `owner` on `resource`.
pub fn create_body(owner: &str, resource: &str) -> String {
    serde_json::json!({
        "spec": {
            "display_name": "audit-test",
            "description": "OPS-1 audit test",
            "owner": { "id": owner },
            "resource": { "id": resource }
        }
    })
    .to_string()
}

/// `data.decision` of an event, or `Null`.
pub fn decision(event: &Value) -> &Value {
    &event["data"]["decision"]
}
