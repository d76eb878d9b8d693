//! Profiles: how to find the events and their ids in a sender's body, and what to answer.
//!
//! There is one extractor ([`extract`]) driven by an [`EventSpec`]; each sender profile is a
//! preset of that spec (data, not code), and a route's `events:` block can override any knob.
//! `generic` is the empty preset: JSON body, one event, id = SHA-256 of the bytes.

mod answer;
mod extract;

use serde::Deserialize;

pub use answer::Answer;
pub use extract::{extract, BodyError, Event, EventId, Extracted, IdSource};

/// How a body is parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    /// A JSON document.
    Json,
    /// `application/x-www-form-urlencoded` name-value pairs (the Gateway's NVP format).
    Form,
    /// JSON or form, by `Content-Type`, else by the first byte.
    JsonOrForm,
    /// Not parsed: the id comes from a header or the body's hash.
    Any,
}

/// Where a body's events and ids are. Pointers are RFC 6901 JSON pointers; for form bodies a
/// pointer `/order/id` names the field `order.id`.
#[derive(Clone, Debug)]
pub struct EventSpec {
    pub format: BodyFormat,
    /// Pointer to an array whose elements are the events (`""` = the body is the array).
    /// `None`: the whole body is one event.
    pub array: Option<String>,
    /// Header carrying the id of a single-event body (first choice when present).
    pub id_header: Option<http::HeaderName>,
    /// Pointers tried in order inside each event; the first string or number found is the id.
    pub id_pointers: Vec<String>,
    /// Top-level fields left out when an event without an id is hashed (then hashed as
    /// canonical JSON; with none listed, the event's raw bytes are hashed).
    pub hash_exclude: Vec<String>,
    /// Pointers to the ordering key: events sharing one reach the app in acceptance order.
    pub ordering_key: Vec<String>,
}

/// A route's `events:` block: overrides of its profile's preset.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileOverrides {
    format: Option<BodyFormat>,
    array: Option<String>,
    id_header: Option<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    id_pointer: Option<Vec<String>>,
    hash_exclude: Option<Vec<String>>,
    #[serde(default, deserialize_with = "one_or_many")]
    ordering_key: Option<Vec<String>>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(Some(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    }))
}

/// A compiled profile.
#[derive(Clone, Debug)]
pub struct Profile {
    pub name: &'static str,
    pub spec: EventSpec,
    pub answer: Answer,
    requires_secret: bool,
}

/// The profile names a route may use.
pub const PROFILES: &[&str] = &["generic", "mastercard-xbs", "mastercard-gateway"];

impl Profile {
    /// The preset named `name`, with a route's overrides applied and checked.
    pub fn build(name: &str, o: ProfileOverrides) -> Result<Profile, String> {
        let mut p = preset(name).ok_or_else(|| format!("unknown profile `{name}`; known: {}", PROFILES.join(", ")))?;
        let s = &mut p.spec;
        if let Some(f) = o.format {
            s.format = f;
        }
        if let Some(a) = o.array {
            s.array = Some(a);
        }
        if let Some(h) = o.id_header {
            s.id_header = Some(
                http::HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| format!("events.id_header `{h}` is not a header name"))?,
            );
        }
        if let Some(v) = o.id_pointer {
            s.id_pointers = v;
        }
        if let Some(v) = o.hash_exclude {
            s.hash_exclude = v;
        }
        if let Some(v) = o.ordering_key {
            s.ordering_key = v;
        }
        let pointers = s.array.iter().chain(&s.id_pointers).chain(&s.ordering_key);
        for ptr in pointers {
            if !(ptr.is_empty() || ptr.starts_with('/')) {
                return Err(format!("`{ptr}` is not a JSON pointer (it must start with /)"));
            }
        }
        if s.format == BodyFormat::Any && (!s.id_pointers.is_empty() || s.array.is_some() || !s.ordering_key.is_empty())
        {
            return Err("events.format any reads nothing in the body: use id_header, or a json format".into());
        }
        if s.array.is_some() && s.format != BodyFormat::Json {
            return Err("events.array needs events.format json".into());
        }
        Ok(p)
    }

    /// Whether a route with this profile must configure a secret header.
    pub fn requires_secret(&self) -> bool {
        self.requires_secret
    }
}

fn preset(name: &str) -> Option<Profile> {
    let base = EventSpec {
        format: BodyFormat::Json,
        array: None,
        id_header: None,
        id_pointers: vec![],
        hash_exclude: vec![],
        ordering_key: vec![],
    };
    let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Some(match name {
        "generic" => Profile {
            name: "generic",
            spec: base,
            answer: Answer::empty(),
            requires_secret: false,
        },
        // Cross-Border Services pushes: one JSON event; `eventRef`, or `event_ref` in the
        // snake_case variants (status change v2, carded rate). Mastercard expects 200, no body.
        "mastercard-xbs" => Profile {
            name: "mastercard-xbs",
            spec: EventSpec {
                id_pointers: strs(&["/eventRef", "/event_ref"]),
                ..base
            },
            answer: Answer::empty(),
            requires_secret: false,
        },
        // Gateway webhooks: REST-JSON or NVP; `X-Notification-Id` is identical on re-delivery;
        // the order id orders events; the secret header is the only authentication.
        "mastercard-gateway" => Profile {
            name: "mastercard-gateway",
            spec: EventSpec {
                format: BodyFormat::JsonOrForm,
                id_header: Some(http::HeaderName::from_static("x-notification-id")),
                ordering_key: strs(&["/order/id"]),
                ..base
            },
            answer: Answer::empty(),
            requires_secret: true,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_profile_and_bad_overrides_are_refused() {
        assert!(Profile::build("nope", ProfileOverrides::default())
            .unwrap_err()
            .contains("unknown profile"));
        let o: ProfileOverrides = serde_yaml_ng::from_str("id_pointer: eventRef").unwrap();
        assert!(Profile::build("generic", o).unwrap_err().contains("JSON pointer"));
        let o: ProfileOverrides = serde_yaml_ng::from_str("format: any\nid_pointer: /a").unwrap();
        assert!(Profile::build("generic", o).is_err());
        let o: ProfileOverrides = serde_yaml_ng::from_str("nonsense: 1")
            .map(|o: ProfileOverrides| o)
            .unwrap_or_default();
        assert!(o.id_pointer.is_none());
    }

    #[test]
    fn overrides_apply() {
        let o: ProfileOverrides = serde_yaml_ng::from_str("id_header: X-Event-Id\nid_pointer: [/a, /b]").unwrap();
        let p = Profile::build("generic", o).unwrap();
        assert_eq!(p.spec.id_header.unwrap().as_str(), "x-event-id");
        assert_eq!(p.spec.id_pointers, vec!["/a", "/b"]);
        assert!(Profile::build("mastercard-gateway", ProfileOverrides::default())
            .unwrap()
            .requires_secret());
    }
}
