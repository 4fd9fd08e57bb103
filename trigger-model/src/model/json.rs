//! The JSON form of the model: what `triggerctl --json` prints (one
//! trigger per line) and what `triggerctl add --from` reads back, so that
//! `history --json` output can be added again.
//!
//! The form is serde's, declared by the attributes on the types in
//! [`super::trigger`] and [`super::enums`]: field names as in the structs
//! (`type` for the trigger type and a parameter's type), enum values by
//! their kebab-case names, empty and zero fields left out, unknown fields
//! rejected, a [`Detail`](super::Detail) as `{"going-down": {...}}`. This
//! module holds the parts written by hand: times as RFC 3339 strings (UTC,
//! microseconds) and the rule for leaving out zeros.

use serde::{Deserialize, Serialize};

use super::time::Timestamp;

/// Whether a field is its type's default, to be left out of the JSON form.
pub(crate) fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Trigger, trigger::going_down_sample};

    #[test]
    fn json_form_is_kebab_case_and_round_trips() {
        let t = Trigger {
            observed_at: Timestamp(1_700_000_000_123_456_000),
            ..going_down_sample()
        };
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains(r#""type":"link-going-down""#), "{json}");
        assert!(
            json.contains(r#""observed_at":"2023-11-14T22:13:20.123456Z""#),
            "{json}"
        );
        let back: Trigger = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
    }
}
