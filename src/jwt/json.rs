//! JOSE JSON parsed strictly: a header or payload with a duplicate member name, at any depth, is
//! malformed. serde_json keeps the last of two members while other JOSE libraries keep the
//! first, so `{"alg":"none","alg":"RS256"}` or two `sub`s would be read differently by
//! Portcullis and by another consumer of the same token (RFC 7515 §5.2 allows refusing).

use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// A JSON value whose objects have unique member names.
struct Unique;

impl<'de> DeserializeSeed<'de> for Unique {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON with unique member names")
    }

    fn visit_bool<E: Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("not a finite number"))
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Unique)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value_seed(Unique)?;
            if members.insert(name, value).is_some() {
                return Err(A::Error::custom("duplicate member name"));
            }
        }
        Ok(Value::Object(members))
    }
}

/// The JSON object in `bytes`, or `None` when it is not one, or names a member twice anywhere.
pub fn unique_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Unique.deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    match value {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::unique_object;

    #[test]
    fn duplicate_members_table() {
        let cases: &[(&str, bool)] = &[
            (r#"{"alg":"RS256","kid":"a"}"#, true),
            (r#"{"alg":"none","alg":"RS256"}"#, false),
            (r#"{"sub":"a","sub":"b"}"#, false),
            (r#"{"sub":"a","x":{"y":1,"y":2}}"#, false),
            (r#"{"sub":"a","x":[{"y":1},{"y":1}]}"#, true),
            (r#"{"a\u0062":1,"ab":2}"#, false),
            (r#"{"n":1.5,"big":18446744073709551615,"neg":-3,"z":null,"t":true}"#, true),
            (r#"[1,2]"#, false),
            (r#"{"a":1} x"#, false),
            (r#"{"a":1"#, false),
        ];
        for (json, ok) in cases {
            assert_eq!(unique_object(json.as_bytes()).is_some(), *ok, "{json}");
        }
        let map = unique_object(br#"{"n":1.5,"big":18446744073709551615}"#).expect("object");
        assert_eq!(serde_json::Value::Object(map), serde_json::json!({"n": 1.5, "big": 18446744073709551615u64}));
    }
}
