//! Docker's list filters: the `filters` query parameter of `GET /volumes`,
//! `POST /volumes/prune` and their network counterparts.
//!
//! The wire form is a JSON object from a filter name to its values, in
//! either of the two shapes Docker's clients send:
//!
//! * `{"label": {"a=b": true, "c": true}}` (current clients), or
//! * `{"label": ["a=b", "c"]}` (clients before API 1.22).
//!
//! Values of one name are alternatives (any may match); different names
//! must all match. Each endpoint accepts a fixed set of names: any other is
//! an `invalid_argument` error, as in Docker (`invalid filter 'x'`).

use std::collections::{BTreeMap, BTreeSet};

use berth_plugin_api::{DriverError, DriverResult};

/// Parsed filters: name → set of values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, BTreeSet<String>>);

impl Filters {
    /// No filter at all.
    pub fn none() -> Filters {
        Filters::default()
    }

    /// Parses the JSON of a `filters` parameter (already percent-decoded);
    /// an empty string is no filter. Names outside `accepted` are refused.
    pub fn parse(json: &str, accepted: &[&str]) -> DriverResult<Filters> {
        if json.trim().is_empty() {
            return Ok(Filters::none());
        }
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| DriverError::invalid_argument(format!("invalid filters {json:?}: {e}")))?;
        let serde_json::Value::Object(map) = value else {
            return Err(DriverError::invalid_argument(format!(
                "invalid filters {json:?}: expected a JSON object of name to values"
            )));
        };
        let mut out = BTreeMap::new();
        for (name, values) in map {
            if !accepted.contains(&name.as_str()) {
                return Err(DriverError::invalid_argument(format!(
                    "invalid filter '{name}': this endpoint accepts {}",
                    accepted.join(", ")
                )));
            }
            let set: BTreeSet<String> = match values {
                serde_json::Value::Object(m) => {
                    m.into_iter().filter(|(_, on)| on.as_bool().unwrap_or(false)).map(|(k, _)| k).collect()
                }
                serde_json::Value::Array(a) => a
                    .into_iter()
                    .map(|v| match v {
                        serde_json::Value::String(s) => Ok(s),
                        other => Err(DriverError::invalid_argument(format!(
                            "invalid filter '{name}': value {other} is not a string"
                        ))),
                    })
                    .collect::<DriverResult<_>>()?,
                other => {
                    return Err(DriverError::invalid_argument(format!(
                        "invalid filter '{name}': {other} is neither an object nor an array of strings"
                    )))
                }
            };
            out.insert(name, set);
        }
        Ok(Filters(out))
    }

    /// Builds filters from `name=value` pairs (the CLI's `--filter`).
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = &'a str>,
        accepted: &[&str],
    ) -> DriverResult<Filters> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for pair in pairs {
            let Some((name, value)) = pair.split_once('=') else {
                return Err(DriverError::invalid_argument(format!(
                    "bad filter {pair:?}: expected name=value"
                )));
            };
            let name = name.trim().to_ascii_lowercase();
            if !accepted.contains(&name.as_str()) {
                return Err(DriverError::invalid_argument(format!(
                    "invalid filter '{name}': accepted are {}",
                    accepted.join(", ")
                )));
            }
            out.entry(name).or_default().insert(value.to_string());
        }
        Ok(Filters(out))
    }

    /// The wire form (`{"name": {"value": true}}`), or `None` when empty.
    pub fn to_json(&self) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        let map: serde_json::Map<String, serde_json::Value> = self
            .0
            .iter()
            .map(|(k, vs)| {
                (k.clone(), vs.iter().map(|v| (v.clone(), serde_json::Value::Bool(true))).collect())
            })
            .collect();
        Some(serde_json::Value::Object(map).to_string())
    }

    /// Whether no filter is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The values of `name` (empty when the filter is not set).
    pub fn values(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0.get(name).into_iter().flatten().map(String::as_str)
    }

    /// Whether filter `name` is set.
    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// A boolean filter (`dangling`, `all`): `None` when not set; an error
    /// for a value that is not a boolean, or for conflicting values.
    pub fn bool(&self, name: &str) -> DriverResult<Option<bool>> {
        let mut answer = None;
        for v in self.values(name) {
            let b = match v.to_ascii_lowercase().as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(DriverError::invalid_argument(format!(
                        "invalid filter '{name}={v}': use true, false, 1 or 0"
                    )))
                }
            };
            if answer.is_some_and(|a| a != b) {
                return Err(DriverError::invalid_argument(format!("filter '{name}' is both true and false")));
            }
            answer = Some(b);
        }
        Ok(answer)
    }

    /// `label` semantics: every value (`key` or `key=value`) must be
    /// satisfied by `labels`. True when the filter is not set.
    pub fn labels_match(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.values(name).all(|want| label_present(want, labels))
    }

    /// `label!` semantics: no value may be satisfied by `labels`.
    pub fn labels_exclude(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.values(name).all(|want| !label_present(want, labels))
    }

    /// Exact match against any value; true when the filter is not set.
    pub fn exact(&self, name: &str, value: &str) -> bool {
        !self.has(name) || self.values(name).any(|v| v == value)
    }

    /// Docker's name matching: any value, read as an unanchored regular
    /// expression, matches `value`; true when the filter is not set. A value
    /// that is not a valid expression is an `invalid_argument` error.
    pub fn regex(&self, name: &str, value: &str) -> DriverResult<bool> {
        if !self.has(name) {
            return Ok(true);
        }
        for pattern in self.values(name) {
            let re = regex::Regex::new(pattern).map_err(|e| {
                DriverError::invalid_argument(format!("invalid filter '{name}={pattern}': {e}"))
            })?;
            if re.is_match(value) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn label_present(want: &str, labels: &BTreeMap<String, String>) -> bool {
    match want.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(want),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_plugin_api::ErrorKind;

    const ACCEPTED: &[&str] = &["dangling", "driver", "label", "name"];

    #[test]
    fn both_wire_shapes_parse_to_the_same_filters() {
        let a = Filters::parse(r#"{"label":{"a=b":true,"c":true},"name":{"x":true}}"#, ACCEPTED).unwrap();
        let b = Filters::parse(r#"{"label":["a=b","c"],"name":["x"]}"#, ACCEPTED).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.values("label").collect::<Vec<_>>(), ["a=b", "c"]);
        assert_eq!(Filters::parse("", ACCEPTED).unwrap(), Filters::none());
    }

    #[test]
    fn unknown_names_and_bad_shapes_are_invalid_arguments() {
        for bad in [r#"{"colour":["red"]}"#, r#"{"label":"x"}"#, r#"["label"]"#, "{nope", r#"{"name":[1]}"#] {
            let e = Filters::parse(bad, ACCEPTED).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{bad}: {e}");
        }
        let e = Filters::parse(r#"{"colour":["red"]}"#, ACCEPTED).unwrap_err();
        assert!(e.message.contains("invalid filter 'colour'"), "{e}");
    }

    #[test]
    fn labels_match_by_key_or_key_and_value() {
        let labels: BTreeMap<String, String> = [("a".to_string(), "b".to_string())].into();
        let f = |s: &str| Filters::from_pairs([s], &["label", "label!"]).unwrap();
        assert!(f("label=a").labels_match("label", &labels));
        assert!(f("label=a=b").labels_match("label", &labels));
        assert!(!f("label=a=c").labels_match("label", &labels));
        assert!(!f("label=z").labels_match("label", &labels));
        assert!(f("label!=z").labels_exclude("label!", &labels));
        assert!(!f("label!=a").labels_exclude("label!", &labels));
        assert!(Filters::none().labels_match("label", &labels));
    }

    #[test]
    fn booleans_accept_dockers_spellings_and_refuse_others() {
        let f = |s: &str| Filters::from_pairs([s], ACCEPTED).unwrap();
        assert_eq!(f("dangling=true").bool("dangling").unwrap(), Some(true));
        assert_eq!(f("dangling=0").bool("dangling").unwrap(), Some(false));
        assert_eq!(Filters::none().bool("dangling").unwrap(), None);
        assert_eq!(f("dangling=maybe").bool("dangling").unwrap_err().kind, ErrorKind::InvalidArgument);
        let both = Filters::from_pairs(["dangling=true", "dangling=false"], ACCEPTED).unwrap();
        assert!(both.bool("dangling").is_err());
    }

    #[test]
    fn pairs_round_trip_through_the_wire_form() {
        let f = Filters::from_pairs(["name=db", "label=a=b"], ACCEPTED).unwrap();
        let back = Filters::parse(&f.to_json().unwrap(), ACCEPTED).unwrap();
        assert_eq!(f, back);
        assert!(f.regex("name", "my-db-1").unwrap() && !f.regex("name", "web").unwrap());
        let anchored = Filters::from_pairs(["name=^d.*1$"], ACCEPTED).unwrap();
        assert!(anchored.regex("name", "db1").unwrap() && !anchored.regex("name", "adb1").unwrap());
        let bad = Filters::from_pairs(["name=("], ACCEPTED).unwrap();
        assert_eq!(bad.regex("name", "x").unwrap_err().kind, ErrorKind::InvalidArgument);
        assert!(Filters::from_pairs(["nonsense"], ACCEPTED).is_err());
        assert!(Filters::from_pairs(["size=1"], ACCEPTED).is_err());
    }
}
