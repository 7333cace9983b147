//! YAML manifests as `serde_json::Value`s (JSON pointers make the checks short). yaml-rust2 is a
//! YAML 1.2 parser that rejects duplicate keys, as the Kubernetes API server does.

use serde_json::{Map, Number, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// Every document of a YAML file.
pub fn documents(text: &str, name: &str) -> Vec<Value> {
    YamlLoader::load_from_str(text)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .iter()
        .map(|doc| to_json(doc, name))
        .collect()
}

/// The one document of a YAML file.
pub fn document(text: &str, name: &str) -> Value {
    let mut docs = documents(text, name);
    assert_eq!(docs.len(), 1, "{name}: expected one YAML document");
    docs.remove(0)
}

fn to_json(yaml: &Yaml, name: &str) -> Value {
    match yaml {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(text) => Number::from_f64(text.parse().unwrap_or(f64::NAN))
            .map(Value::Number)
            .unwrap_or_else(|| panic!("{name}: `{text}` is not a finite number")),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(items.iter().map(|i| to_json(i, name)).collect()),
        Yaml::Hash(hash) => {
            let mut map = Map::new();
            for (key, value) in hash {
                let Yaml::String(key) = key else {
                    panic!("{name}: non-string key {key:?}");
                };
                map.insert(key.clone(), to_json(value, name));
            }
            Value::Object(map)
        }
        Yaml::Alias(_) | Yaml::BadValue => panic!("{name}: unsupported YAML node {yaml:?}"),
    }
}

/// The string at a JSON pointer, or a panic naming it.
pub fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value}"))
}

/// The integer at a JSON pointer, or a panic naming it.
pub fn int_at(value: &Value, pointer: &str) -> i64 {
    value
        .pointer(pointer)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("no integer at {pointer} in {value}"))
}

/// The array at a JSON pointer (empty when absent).
pub fn array_at<'a>(value: &'a Value, pointer: &str) -> &'a [Value] {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

#[test]
fn duplicate_keys_and_bad_yaml_are_rejected() {
    let dup = std::panic::catch_unwind(|| documents("a: 1\na: 2\n", "dup.yaml"));
    assert!(dup.is_err(), "a duplicate key must not parse");
    let docs = documents("a: [1, 2.5, x, true, null]\n---\nb: {c: d}\n", "two.yaml");
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0], serde_json::json!({"a": [1, 2.5, "x", true, null]}));
    assert_eq!(str_at(&docs[1], "/b/c"), "d");
}
