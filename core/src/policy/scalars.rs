//! Spec values checked while they are deserialized, so that an error names
//! the exact field (`...ipBlocks[1]`) and line: serde_yaml locates errors
//! raised by a visitor precisely, but not errors raised afterwards.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::matching::Cidr;

/// A port as Istio writes it (`"3306"`); YAML integers are accepted too.
/// Serialized as a string, Istio's canonical form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortValue(pub u16);

fn parse_port<E: de::Error>(text: &str) -> Result<u16, E> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ => Err(E::custom(format!(
            "{text:?} is not a port number (1-65535)"
        ))),
    }
}

struct PortVisitor;

impl Visitor<'_> for PortVisitor {
    type Value = PortValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a port number (1-65535)")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<PortValue, E> {
        parse_port(v).map(PortValue)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortValue, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortValue, E> {
        self.visit_str(&v.to_string())
    }
}

impl<'de> Deserialize<'de> for PortValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PortVisitor)
    }
}

impl Serialize for PortValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// An `ipBlocks` entry: a CIDR or a bare IP, kept as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpBlock {
    pub(crate) text: String,
    pub(crate) cidr: Cidr,
}

impl IpBlock {
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

struct IpBlockVisitor;

impl Visitor<'_> for IpBlockVisitor {
    type Value = IpBlock;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an IP address or CIDR")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<IpBlock, E> {
        let cidr = v.parse::<Cidr>().map_err(E::custom)?;
        Ok(IpBlock {
            text: v.to_owned(),
            cidr,
        })
    }
}

impl<'de> Deserialize<'de> for IpBlock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(IpBlockVisitor)
    }
}

impl Serialize for IpBlock {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// The `when` keys ztunnel can evaluate (Istio's `l4WhenAttributes`); every
/// other key needs HTTP and so a waypoint.
pub(crate) const L4_WHEN_KEYS: [&str; 5] = [
    "source.ip",
    "source.namespace",
    "source.principal",
    "destination.ip",
    "destination.port",
];

/// A `when` condition. `values` of the L4 keys are checked by kind (IP,
/// port) as they are read, when `key` comes first (as it always does in
/// Istio's docs); otherwise once the condition has been read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    pub key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

#[derive(Clone, Copy)]
enum ValueKind {
    Any,
    Ip,
    Port,
}

fn value_kind(key: &str) -> ValueKind {
    match key {
        "source.ip" | "destination.ip" => ValueKind::Ip,
        "destination.port" => ValueKind::Port,
        _ => ValueKind::Any,
    }
}

fn check_value<E: de::Error>(kind: ValueKind, value: &str) -> Result<(), E> {
    match kind {
        ValueKind::Any => Ok(()),
        ValueKind::Ip => value.parse::<Cidr>().map(|_| ()).map_err(E::custom),
        ValueKind::Port => parse_port(value).map(|_| ()),
    }
}

/// One value, as a string whatever its YAML type (`values: [8080]` works).
struct ValueSeed(ValueKind);

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for ValueSeed {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        check_value(self.0, v)?;
        Ok(v.to_owned())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        self.visit_str(&v.to_string())
    }
}

struct ValuesSeed(ValueKind);

impl<'de> DeserializeSeed<'de> for ValuesSeed {
    type Value = Vec<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<String>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ValuesSeed {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(ValueSeed(self.0))? {
            out.push(v);
        }
        Ok(out)
    }
}

const CONDITION_FIELDS: &[&str] = &["key", "values", "notValues"];

struct ConditionVisitor;

impl<'de> Visitor<'de> for ConditionVisitor {
    type Value = Condition;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a condition {key, values, notValues}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Condition, A::Error> {
        let mut key: Option<String> = None;
        let mut values = None;
        let mut not_values = None;
        let mut checked = true;
        while let Some(field) = map.next_key::<String>()? {
            let kind = key.as_deref().map_or(ValueKind::Any, value_kind);
            checked &= key.is_some();
            match field.as_str() {
                "key" if key.is_none() => key = Some(map.next_value()?),
                "values" if values.is_none() => {
                    values = Some(map.next_value_seed(ValuesSeed(kind))?)
                }
                "notValues" if not_values.is_none() => {
                    not_values = Some(map.next_value_seed(ValuesSeed(kind))?)
                }
                "key" | "values" | "notValues" => {
                    return Err(de::Error::custom(format!("duplicate field `{field}`")));
                }
                other => return Err(de::Error::unknown_field(other, CONDITION_FIELDS)),
            }
        }
        let key = key.ok_or_else(|| de::Error::missing_field("key"))?;
        let values: Vec<String> = values.unwrap_or_default();
        let not_values: Vec<String> = not_values.unwrap_or_default();
        if key.is_empty() {
            return Err(de::Error::custom("`key` must not be empty"));
        }
        if values.is_empty() && not_values.is_empty() {
            return Err(de::Error::custom(format!(
                "at least one of `values` or `notValues` must be set for key {key}"
            )));
        }
        if !checked {
            let kind = value_kind(&key);
            for v in values.iter().chain(&not_values) {
                check_value::<A::Error>(kind, v)
                    .map_err(|err| de::Error::custom(format!("{key}: {err}")))?;
            }
        }
        Ok(Condition {
            key,
            values,
            not_values,
        })
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ConditionVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_as_strings_or_integers() {
        let ports: Vec<PortValue> = serde_yaml::from_str("[\"3306\", 80]").unwrap();
        assert_eq!(ports, [PortValue(3306), PortValue(80)]);
        assert_eq!(serde_yaml::to_string(&ports).unwrap(), "- '3306'\n- '80'\n");
        for bad in ["[\"abc\"]", "[0]", "[\"70000\"]", "[\"+80\"]", "[-1]"] {
            let err = serde_yaml::from_str::<Vec<PortValue>>(bad).unwrap_err();
            assert!(
                err.to_string().contains("not a port number"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn condition_values_are_checked_by_key() {
        let ok: Condition =
            serde_yaml::from_str("{key: destination.port, values: [8080, \"9090\"]}").unwrap();
        assert_eq!(ok.values, ["8080", "9090"]);
        let err =
            serde_yaml::from_str::<Condition>("{key: source.ip, notValues: [10.0.0.0/8, nope]}")
                .unwrap_err();
        assert!(
            err.to_string().starts_with("notValues[1]: \"nope\""),
            "{err}"
        );
        // Key after values: checked at the end.
        let err = serde_yaml::from_str::<Condition>("{values: [\"x\"], key: destination.ip}")
            .unwrap_err();
        assert!(err.to_string().contains("destination.ip: \"x\""), "{err}");
        let err = serde_yaml::from_str::<Condition>("{key: \"request.headers[x]\"}").unwrap_err();
        assert!(err.to_string().contains("at least one of"), "{err}");
        let err = serde_yaml::from_str::<Condition>("{key: a, value: [x]}").unwrap_err();
        assert!(err.to_string().contains("unknown field `value`"), "{err}");
        // L7 keys take any value.
        let l7: Condition =
            serde_yaml::from_str("{key: \"request.headers[version]\", values: [v1]}").unwrap();
        assert_eq!(l7.key, "request.headers[version]");
    }
}
