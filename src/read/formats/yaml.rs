//! YAML parsing with a bound on what aliases expand to.
//!
//! A YAML alias (`*a`) repeats the node its anchor (`&a`) names, and the
//! parser expands every repetition: 300 bytes can name a 1 MiB string three
//! thousand times (3 GB), or nest lists of aliases into a billion nodes. The
//! files airlock parses as YAML (a pack's `values.yaml`, a chart's
//! `Chart.yaml`, an installer's sidecar, a Zarf package) come from signed
//! bundles, but a signature says who made a bundle, not that it is harmless,
//! so each parse builds its value under a budget and fails once the expanded
//! document would pass it.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_yaml_ng::value::{Tag, TaggedValue};
use serde_yaml_ng::{Mapping, Value};

/// The most a YAML file may expand to, counting each node as
/// [`NODE_BYTES`] plus its text. Far above any real values file or
/// `Chart.yaml` (they are read whole only up to a few MiB), far below
/// what would hurt an import host.
pub const MAX_EXPANDED_BYTES: u64 = 64 << 20;

/// What one node (a scalar, list or map entry) is counted as, about what a
/// `serde_yaml_ng::Value` costs in memory.
const NODE_BYTES: u64 = 64;

/// Parses `bytes` as YAML into `T`, failing when the document, aliases
/// expanded, is larger than [`MAX_EXPANDED_BYTES`].
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let value = bounded_value(bytes, MAX_EXPANDED_BYTES)?;
    serde_yaml_ng::from_value(value).map_err(|e| e.to_string())
}

/// The document in `bytes` as a [`Value`], built within `budget` bytes.
fn bounded_value(bytes: &[u8], budget: u64) -> Result<Value, String> {
    let budget = Budget(Cell::new(budget));
    let deserializer = serde_yaml_ng::Deserializer::from_slice(bytes);
    Node(&budget)
        .deserialize(deserializer)
        .map_err(|e| e.to_string())
}

struct Budget(Cell<u64>);

impl Budget {
    fn spend<E: de::Error>(&self, text: usize) -> Result<(), E> {
        let cost = NODE_BYTES + text as u64;
        match self.0.get().checked_sub(cost) {
            Some(left) => {
                self.0.set(left);
                Ok(())
            }
            None => Err(E::custom(format!(
                "the document expands to more than {MAX_EXPANDED_BYTES} bytes (YAML aliases repeating large nodes?)"
            ))),
        }
    }
}

/// Builds one node of the document, charging it to the budget.
#[derive(Clone, Copy)]
struct Node<'a>(&'a Budget);

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.0.spend(0)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.0.spend(0)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.0.spend(0)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.0.spend(0)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.0.spend(v.len())?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.0.spend(v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.0.spend(0)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.0.spend(0)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.0.spend(0)?;
        let mut mapping = Mapping::new();
        while let Some(key) = map.next_key_seed(self)? {
            let value = map.next_value_seed(self)?;
            mapping.insert(key, value);
        }
        Ok(Value::Mapping(mapping))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        use de::VariantAccess as _;
        let (tag, variant): (String, _) = data.variant()?;
        self.0.spend(tag.len())?;
        let value = variant.newtype_variant_seed(self)?;
        Ok(Value::Tagged(Box::new(TaggedValue {
            tag: Tag::new(tag),
            value,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_documents_parse_as_before() {
        let text = b"a: 1\nb: [x, {c: true}]\nd: &anchor {e: f}\ng: *anchor\nh: !custom 3\n";
        let bounded: Value = from_slice(text).expect("parses");
        let plain: Value = serde_yaml_ng::from_slice(text).expect("parses");
        assert_eq!(bounded, plain);
    }

    #[test]
    fn aliases_expanding_past_the_budget_are_refused() {
        // A 1 KiB string repeated by 2,000 aliases: 2 MB expanded from 13 KB.
        let mut text = format!("big: &big \"{}\"\nlist:\n", "x".repeat(1024));
        for _ in 0..2000 {
            text.push_str("  - *big\n");
        }
        let error = bounded_value(text.as_bytes(), 1 << 20).expect_err("too large");
        assert!(error.contains("expands to more than"), "{error}");
        assert!(bounded_value(text.as_bytes(), 4 << 20).is_ok());
    }
}
