//! Timestamps in records as RFC 3339 strings (UTC), readable by people and `jq`.

use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serializer};

/// Serializes a timestamp as RFC 3339.
pub fn serialize<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*time))
}

/// Parses an RFC 3339 timestamp.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)
}

/// The same for optional timestamps.
pub mod option {
    use super::*;

    /// Serializes an optional timestamp.
    pub fn serialize<S: Serializer>(time: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match time {
            Some(t) => super::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    /// Parses an optional timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| humantime::parse_rfc3339_weak(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}
