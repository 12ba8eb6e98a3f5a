//! JSON decoding as tolerant as Go's `encoding/json`, which is what dockerd
//! and most plugins use on the other end of the wire:
//!
//! * object keys match struct fields **in any letter case** (`"name"`,
//!   `"NAME"` and `"Name"` all fill `Name`; an exact match wins over a
//!   case-folded one);
//! * `null` where an object, array, string, number or bool is expected
//!   leaves the field at its zero value (`Default`) instead of failing;
//! * unknown fields are ignored (as serde does unless a type denies them).
//!
//! Anything else (a string where a number is expected, malformed JSON) is
//! still an error. Use it for everything that arrives from the other side:
//! request bodies in the server, response bodies in the client.

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{DeserializeOwned, IntoDeserializer, Visitor};
use serde::Deserializer;
use serde_json::{Map, Value};

type Error = serde_json::Error;

/// Decodes `bytes` tolerantly. An empty (or all-whitespace) body decodes as
/// `{}`: Docker sends no body at all for calls without arguments.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return from_value(Value::Object(Map::new()));
    }
    // Only the first JSON value counts; trailing data is ignored, as in Go.
    let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<Value>();
    let value = match stream.next() {
        Some(v) => v?,
        None => Value::Object(Map::new()),
    };
    from_value(value)
}

/// Decodes an already parsed value tolerantly.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, Error> {
    T::deserialize(Tolerant(value))
}

/// Looks `key` up in `map` the way Go would fill a field named `key`: the
/// exact key first, then any key equal ignoring ASCII case.
pub fn get_field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

/// A JSON value under Go's decoding rules.
#[derive(Debug)]
struct Tolerant(Value);

impl<'de> IntoDeserializer<'de, Error> for Tolerant {
    type Deserializer = Tolerant;
    fn into_deserializer(self) -> Tolerant {
        self
    }
}

fn visit_object<'de, V: Visitor<'de>>(map: Map<String, Value>, visitor: V) -> Result<V::Value, Error> {
    let mut de = MapDeserializer::new(map.into_iter().map(|(k, v)| (k, Tolerant(v))));
    let out = visitor.visit_map(&mut de)?;
    de.end()?;
    Ok(out)
}

fn visit_array<'de, V: Visitor<'de>>(items: Vec<Value>, visitor: V) -> Result<V::Value, Error> {
    let mut de = SeqDeserializer::new(items.into_iter().map(Tolerant));
    let out = visitor.visit_seq(&mut de)?;
    de.end()?;
    Ok(out)
}

/// Renames keys to the struct's field names ignoring case, and drops nulls
/// so that `#[serde(default)]` applies.
fn canonical(map: Map<String, Value>, fields: &'static [&'static str]) -> Map<String, Value> {
    let mut out = Map::with_capacity(map.len());
    let mut exact: Vec<&'static str> = Vec::new();
    for (k, v) in map {
        if v.is_null() {
            continue;
        }
        match fields.iter().find(|f| **f == k) {
            Some(f) => {
                exact.push(f);
                out.insert(k, v);
            }
            None => match fields.iter().find(|f| f.eq_ignore_ascii_case(&k)) {
                // An exact match elsewhere in the object wins.
                Some(f) if exact.contains(f) => {}
                Some(f) => {
                    out.entry((*f).to_string()).or_insert(v);
                }
                None => {
                    out.insert(k, v);
                }
            },
        }
    }
    out
}

macro_rules! zero_on_null {
    ($($method:ident => $visit:ident($zero:expr)),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0 {
                Value::Null => visitor.$visit($zero),
                v => v.$method(visitor),
            }
        }
    )*};
}

impl<'de> Deserializer<'de> for Tolerant {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Object(map) => visit_object(map, visitor),
            Value::Array(items) => visit_array(items, visitor),
            v => v.deserialize_any(visitor),
        }
    }

    zero_on_null! {
        deserialize_bool => visit_bool(false),
        deserialize_i8 => visit_i64(0),
        deserialize_i16 => visit_i64(0),
        deserialize_i32 => visit_i64(0),
        deserialize_i64 => visit_i64(0),
        deserialize_u8 => visit_u64(0),
        deserialize_u16 => visit_u64(0),
        deserialize_u32 => visit_u64(0),
        deserialize_u64 => visit_u64(0),
        deserialize_f32 => visit_f64(0.0),
        deserialize_f64 => visit_f64(0.0),
        deserialize_str => visit_str(""),
        deserialize_string => visit_str(""),
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_char(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_bytes(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_byte_buf(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            v => visitor.visit_some(Tolerant(v)),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visit_array(Vec::new(), visitor),
            Value::Array(items) => visit_array(items, visitor),
            v => v.deserialize_seq(visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visit_object(Map::new(), visitor),
            Value::Object(map) => visit_object(map, visitor),
            v => v.deserialize_map(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visit_object(Map::new(), visitor),
            Value::Object(map) => visit_object(canonical(map, fields), visitor),
            v => v.deserialize_map(visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_identifier(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::network::{JoinResponse, Scope};
    use crate::volume::{VolumeCreateRequest, VolumeInfo};

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    #[serde(default)]
    struct Reply {
        #[serde(rename = "Volume")]
        volume: Option<VolumeInfo>,
        #[serde(rename = "Volumes")]
        volumes: Vec<VolumeInfo>,
        #[serde(rename = "Err")]
        err: String,
    }

    #[test]
    fn field_names_match_in_any_case_and_unknown_fields_are_ignored() {
        let r: VolumeCreateRequest =
            from_slice(br#"{"name":"v1","OPTS":{"Size":"1G"},"Extra":[1,2]}"#).unwrap();
        assert_eq!(r.name, "v1");
        assert_eq!(r.options, BTreeMap::from([("Size".to_string(), "1G".to_string())]));
    }

    #[test]
    fn an_exact_match_wins_over_a_case_folded_one() {
        let r: VolumeCreateRequest = from_slice(br#"{"name":"folded","Name":"exact"}"#).unwrap();
        assert_eq!(r.name, "exact");
        let r: VolumeCreateRequest = from_slice(br#"{"Name":"exact","NAME":"folded"}"#).unwrap();
        assert_eq!(r.name, "exact");
    }

    #[test]
    fn nulls_give_zero_values() {
        let r: VolumeCreateRequest = from_slice(br#"{"Name":"v","Opts":null}"#).unwrap();
        assert!(r.options.is_empty());
        let r: Reply = from_slice(br#"{"Volume":null,"Volumes":null,"Err":null}"#).unwrap();
        assert_eq!(r, Reply::default());
        let j: JoinResponse =
            from_slice(br#"{"InterfaceName":null,"StaticRoutes":null,"Gateway":null}"#).unwrap();
        assert!(j.interface_name.is_none());
        assert!(j.static_routes.is_empty());
    }

    #[test]
    fn nested_structs_and_status_maps_decode() {
        let r: Reply = from_slice(
            br#"{"volume":{"name":"a","mountpoint":"/m","status":{"x":{"y":null}},"createdat":"2024-01-01T00:00:00Z"}}"#,
        )
        .unwrap();
        let v = r.volume.unwrap();
        assert_eq!((v.name.as_str(), v.mountpoint.as_str()), ("a", "/m"));
        assert_eq!(v.status["x"], serde_json::json!({"y": null}));
        assert_eq!(v.created_at.as_deref(), Some("2024-01-01T00:00:00Z"));
    }

    #[test]
    fn empty_bodies_decode_as_empty_objects_and_trailing_data_is_ignored() {
        let r: VolumeCreateRequest = from_slice(b"").unwrap();
        assert_eq!(r, VolumeCreateRequest::default());
        let r: VolumeCreateRequest = from_slice(b" \n").unwrap();
        assert_eq!(r, VolumeCreateRequest::default());
        let r: VolumeCreateRequest = from_slice(b"{\"Name\":\"a\"}\n{\"Name\":\"b\"}").unwrap();
        assert_eq!(r.name, "a");
    }

    #[test]
    fn wrong_types_and_malformed_json_are_still_errors() {
        assert!(from_slice::<VolumeCreateRequest>(br#"{"Name":5}"#).is_err());
        assert!(from_slice::<VolumeCreateRequest>(br#"{"Name":"#).is_err());
        assert!(from_slice::<VolumeCreateRequest>(br#"[1]"#).is_err());
    }

    #[test]
    fn enums_decode_from_their_wire_names() {
        #[derive(Debug, serde::Deserialize)]
        struct Caps {
            #[serde(rename = "Scope")]
            scope: Scope,
        }
        let c: Caps = from_slice(br#"{"scope":"global"}"#).unwrap();
        assert_eq!(c.scope, Scope::Global);
    }

    #[test]
    fn get_field_prefers_the_exact_key() {
        let v: Value = serde_json::from_str(r#"{"err":"folded","Err":"exact"}"#).unwrap();
        assert_eq!(get_field(v.as_object().unwrap(), "Err").unwrap(), "exact");
        let v: Value = serde_json::from_str(r#"{"ERR":"folded"}"#).unwrap();
        assert_eq!(get_field(v.as_object().unwrap(), "Err").unwrap(), "folded");
    }
}
