//! Profiles: how to find the events and their ids in a sender's body, and what to answer.
//!
//! There is one extractor ([`extract`]) driven by an [`EventSpec`]; each sender profile is a
//! preset of that spec (data, not code), and a route's `events:` block can override any knob.
//! `generic` is the empty preset: JSON body, one event, id = SHA-256 of the bytes. A route's
//! `answer:` block likewise overrides the preset's [`Answer`].

mod answer;
mod extract;
pub(crate) mod json;
mod xml;

use std::sync::OnceLock;

use serde::Deserialize;

pub use answer::{Answer, AnswerBody, AnswerOverrides, PerEvent};
pub use extract::{bytes_hash, extract, fingerprint, BodyError, Event, Extracted, IdSource};
pub use xml::XmlError;

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
    /// An XML document (no DTD, no entities beyond the predefined ones).
    Xml,
    /// JSON or XML, by the first byte (`<` is XML), whatever the `Content-Type`.
    JsonOrXml,
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
    /// Pointers to members a re-delivery may change without being another notification (CEN's
    /// `/pushStatus`): left out of the event's content fingerprint.
    pub volatile: Vec<String>,
    /// The pointers compiled, on first use. Set the fields above before extracting with it.
    pub plan: OnceLock<extract::Plan>,
}

impl EventSpec {
    fn plan(&self) -> &extract::Plan {
        self.plan.get_or_init(|| extract::Plan::new(self))
    }
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
    #[serde(default, deserialize_with = "one_or_many")]
    volatile: Option<Vec<String>>,
}

/// A config value written as one string or a list of them (also used by `config`).
pub(crate) fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
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
pub const PROFILES: &[&str] = &[
    "generic",
    "mastercard-xbs",
    "mastercard-cen",
    "mastercard-gateway",
    "ethoca-alerts",
];

impl Profile {
    /// The preset named `name`, with a route's `events:` and `answer:` blocks applied and checked.
    pub fn build(name: &str, o: ProfileOverrides, answer: AnswerOverrides) -> Result<Profile, String> {
        let mut p = preset(name).ok_or_else(|| format!("unknown profile `{name}`; known: {}", PROFILES.join(", ")))?;
        p.answer = p.answer.with_overrides(answer)?;
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
        if let Some(v) = o.volatile {
            s.volatile = v;
        }
        let pointers = s
            .array
            .iter()
            .chain(&s.id_pointers)
            .chain(&s.ordering_key)
            .chain(&s.volatile);
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
        let json = matches!(
            s.format,
            BodyFormat::Json | BodyFormat::JsonOrForm | BodyFormat::JsonOrXml
        );
        if !s.hash_exclude.is_empty() && !json {
            return Err("events.hash_exclude needs a json format".into());
        }
        if !s.volatile.is_empty() && !json {
            return Err("events.volatile needs a json format (other bodies are fingerprinted as bytes)".into());
        }
        if s.volatile.iter().any(String::is_empty) {
            return Err("events.volatile cannot leave out the whole event".into());
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
        volatile: vec![],
        plan: OnceLock::new(),
    };
    let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Some(match name {
        "generic" => Profile {
            name: "generic",
            spec: base,
            answer: Answer::empty(),
            requires_secret: false,
        },
        // Cross-Border Services pushes: one JSON (or XML) event; `eventRef`, or `event_ref` in
        // the snake_case variants (status change v2, carded rate). Mastercard expects 200, no
        // body. One transaction's statuses are ordered by its reference (and guarded:
        // src/ingress/stale.rs).
        "mastercard-xbs" => Profile {
            name: "mastercard-xbs",
            spec: EventSpec {
                format: BodyFormat::JsonOrXml,
                id_pointers: strs(&["/eventRef", "/event_ref"]),
                ordering_key: strs(&["/transactionReference", "/transaction_reference"]),
                ..base
            },
            answer: Answer::empty(),
            requires_secret: false,
        },
        // Commercial Event Notifications: the body is a JSON array of notifications from one or
        // more subscriptions. A notification has no id of its own (`idempotencyKey`, on token
        // events only, names the request that caused it, and one request causes several
        // notifications), so each is keyed by its canonical JSON without `pushStatus`, the one
        // field a re-push changes (docs/profiles.md says why). 200, no body.
        "mastercard-cen" => Profile {
            name: "mastercard-cen",
            spec: EventSpec {
                array: Some(String::new()),
                hash_exclude: strs(&["pushStatus"]),
                volatile: strs(&["/pushStatus"]),
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
        // Ethoca Alerts push: an array of alerts, each with a 25-character `alertId`, and an
        // acknowledgement listing each alert with SUCCESS. The request's and the answer's field
        // names are assumed (the push spec was not available): all of them can be overridden.
        "ethoca-alerts" => Profile {
            name: "ethoca-alerts",
            spec: EventSpec {
                array: Some("/alerts".into()),
                id_pointers: strs(&["/alertId"]),
                ..base
            },
            answer: Answer::per_event(PerEvent::default()),
            requires_secret: false,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// Builds from the YAML of a route's `events:` and `answer:` blocks ("" = absent).
    fn build(name: &str, events: &str, answer: &str) -> Result<Profile, String> {
        fn parse<T: Default + serde::de::DeserializeOwned>(yaml: &str) -> T {
            if yaml.is_empty() {
                T::default()
            } else {
                serde_yaml_ng::from_str(yaml).unwrap()
            }
        }
        Profile::build(name, parse(events), parse(answer))
    }

    fn preset_only(name: &str) -> Profile {
        Profile::build(name, ProfileOverrides::default(), AnswerOverrides::default()).unwrap()
    }

    #[test]
    fn unknown_profile_and_bad_overrides_are_refused() {
        assert!(build("nope", "", "").unwrap_err().contains("unknown profile"));
        assert!(build("generic", "id_pointer: eventRef", "")
            .unwrap_err()
            .contains("JSON pointer"));
        assert!(build("generic", "format: any\nid_pointer: /a", "").is_err());
        assert!(build("mastercard-cen", "format: form", "").is_err());
        assert!(build("generic", "format: form\nhash_exclude: [a]", "").is_err());
        assert!(build("generic", "", "status: 404").unwrap_err().contains("2xx"));
        assert!(serde_yaml_ng::from_str::<ProfileOverrides>("nonsense: 1").is_err());
        assert!(build("generic", "volatile: sentAt", "")
            .unwrap_err()
            .contains("JSON pointer"));
        assert!(build("generic", "format: form\nvolatile: [/sentAt]", "")
            .unwrap_err()
            .contains("volatile"));
        assert!(build("generic", "volatile: ['']", "").is_err());
    }

    #[test]
    fn overrides_apply() {
        let p = build("generic", "id_header: X-Event-Id\nid_pointer: [/a, /b]", "").unwrap();
        assert_eq!(p.spec.id_header.unwrap().as_str(), "x-event-id");
        assert_eq!(p.spec.id_pointers, vec!["/a", "/b"]);
        let p = build("mastercard-xbs", "volatile: /transactionHistories", "").unwrap();
        assert_eq!(p.spec.volatile, ["/transactionHistories"]);
        assert_eq!(preset_only("mastercard-cen").spec.volatile, ["/pushStatus"]);
        assert!(preset_only("mastercard-gateway").requires_secret());
        let p = build(
            "ethoca-alerts",
            "array: /items\nid_pointer: /id",
            "per_event: { list: items, id_field: id }",
        )
        .unwrap();
        assert_eq!(
            (p.spec.array.as_deref(), p.spec.id_pointers.as_slice()),
            (Some("/items"), &["/id".to_string()][..])
        );
        assert!(matches!(&p.answer.body, AnswerBody::PerEvent(pe) if pe.list == "items" && pe.id_field == "id"));
    }

    #[test]
    fn every_listed_profile_has_a_preset() {
        for name in PROFILES {
            assert_eq!(preset_only(name).name, *name);
        }
    }

    fn sample(name: &str) -> Bytes {
        let path = format!("{}/examples/samples/{name}", env!("CARGO_MANIFEST_DIR"));
        Bytes::from(std::fs::read(&path).unwrap())
    }

    fn run(profile: &str, body: &Bytes, headers: &[(&str, &str)]) -> Extracted {
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        extract(&preset_only(profile).spec, body, &h).unwrap()
    }

    fn ids(x: &Extracted) -> Vec<(&str, IdSource)> {
        x.events.iter().map(|e| (e.id.as_str(), e.id_source)).collect()
    }

    /// The contract each preset keeps, over the documented shapes in examples/samples.
    #[test]
    fn presets_find_the_documented_ids() {
        use IdSource::Sender;
        // (profile, sample file, request headers, the ids it must find)
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: [Case; 7] = [
            (
                "mastercard-xbs",
                "xbs-status-change.json",
                &[],
                &["ref_Xq7Lm2Vb9Tc4Rz8Wp1Nd6Kf3Hs5Gj0Ya"],
            ),
            (
                "mastercard-xbs",
                "xbs-status-change-snake.json",
                &[],
                &["ref_Bn4Qw8Ze1Mr6Tx3Ly9Pc2Vk7Ja5Hd0Sg"],
            ),
            (
                "mastercard-xbs",
                "xbs-carded-rate.json",
                &[],
                &["ref_Cr3Dt7Fy1Gu5Hi9Jo2Kp6Lq0Mr4Ns8Ot"],
            ),
            // The top-level eventRef, not the one inside requestStatus.requestHistory.
            (
                "mastercard-xbs",
                "xbs-rfi.json",
                &[],
                &["ref_Rf1Ia2Mb3Nc4Od5Pe6Qf7Rg8Sh9Ti0Uj"],
            ),
            (
                "mastercard-gateway",
                "gateway.json",
                &[("x-notification-id", "N-1")],
                &["N-1"],
            ),
            (
                "mastercard-gateway",
                "gateway.nvp",
                &[
                    ("x-notification-id", "N-2"),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                &["N-2"],
            ),
            (
                "ethoca-alerts",
                "ethoca-alerts.json",
                &[],
                &["A0SAMPLE0000000000000001Z", "A0SAMPLE0000000000000002Z"],
            ),
        ];
        for (profile, file, headers, want) in cases {
            let x = run(profile, &sample(file), headers);
            let want: Vec<_> = want.iter().map(|id| (*id, Sender)).collect();
            assert_eq!(ids(&x), want, "{profile} {file}");
        }
    }

    #[test]
    fn xbs_account_validation_and_unknown_shapes() {
        // Account validation's payload was not published: the generic eventRef rule applies.
        let body = Bytes::from_static(
            br#"{"eventRef":"ref_av_1","eventType":"ACCOUNT_VALIDATION","refId":"r1","status":"SUCCESS"}"#,
        );
        assert_eq!(
            ids(&run("mastercard-xbs", &body, &[])),
            [("ref_av_1", IdSource::Sender)]
        );
        // No eventRef at all: keyed by the body's hash and counted as missing an id.
        let body = Bytes::from_static(br#"{"refId":"r1","status":"SUCCESS"}"#);
        assert_eq!(run("mastercard-xbs", &body, &[]).events[0].id_source, IdSource::Hash);
    }

    #[test]
    fn cen_keys_each_element() {
        let body = sample("cen-batch.json");
        let x = run("mastercard-cen", &body, &[]);
        assert!(x.batch);
        let got = ids(&x);
        // Pinned: the documented canonical form, cross-checked with Python's
        // json.dumps(e, sort_keys=True, separators=(",", ":"), ensure_ascii=False). The token
        // event is keyed like the others: its idempotencyKey names a request, not the
        // notification.
        assert_eq!(
            got,
            [
                (
                    "sha256:9b7d6e77dcb956b0b4030b53f700ba8336cb78837f81a76036d1950b9be7aa0f",
                    IdSource::Content
                ),
                (
                    "sha256:d202261aff2ad27c762bce72ae6ce96c1ba935e55e92be3c6a59a04fa051ab96",
                    IdSource::Content
                ),
                (
                    "sha256:6cd58c8eefd1d80168ac9d6513f4ad46bd246ed9d462dd0c2012305b61e5d756",
                    IdSource::Content
                ),
            ]
        );
        // Each element's bytes are a slice of the body, exactly as sent.
        for e in &x.events {
            let start = e.bytes.as_ptr() as usize - body.as_ptr() as usize;
            assert_eq!(&body[start..start + e.bytes.len()], &e.bytes[..]);
            assert!(e.bytes.starts_with(b"{") && e.bytes.ends_with(b"}"));
        }
        // A re-push with another pushStatus and another layout is the same event.
        let mut first: serde_json::Value = serde_json::from_slice(&x.events[0].bytes).unwrap();
        first["pushStatus"] = "DELIVERED".into();
        let again = Bytes::from(format!("[{}]", serde_json::to_string_pretty(&first).unwrap()));
        assert_eq!(run("mastercard-cen", &again, &[]).events[0].id.as_str(), got[0].0);
    }

    #[test]
    fn gateway_ids_and_order_keys_in_both_formats() {
        let form = ("content-type", "application/x-www-form-urlencoded");
        let json = run(
            "mastercard-gateway",
            &sample("gateway.json"),
            &[("x-notification-id", "N-1")],
        );
        assert_eq!(json.events[0].ordering_key.as_deref(), Some("ORD-SAMPLE-0001"));
        let nvp = run("mastercard-gateway", &sample("gateway.nvp"), &[form]);
        let e = &nvp.events[0];
        assert_eq!(
            (e.ordering_key.as_deref(), e.id_source),
            (Some("ORD-SAMPLE-0002"), IdSource::Hash)
        );
        // Without a Content-Type the first byte decides.
        let nvp = run(
            "mastercard-gateway",
            &sample("gateway.nvp"),
            &[("x-notification-id", "N-3")],
        );
        assert_eq!(nvp.events[0].ordering_key.as_deref(), Some("ORD-SAMPLE-0002"));
    }

    #[test]
    fn ethoca_answers_each_alert() {
        let p = preset_only("ethoca-alerts");
        let x = run("ethoca-alerts", &sample("ethoca-alerts.json"), &[]);
        let (status, ct, body) = p.answer.render(&x.events);
        assert_eq!((status, ct), (200, Some("application/json")));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"alerts": [
                {"alertId": "A0SAMPLE0000000000000001Z", "status": "SUCCESS"},
                {"alertId": "A0SAMPLE0000000000000002Z", "status": "SUCCESS"},
            ]})
        );
        // The other presets answer 200 with no body.
        for name in ["generic", "mastercard-xbs", "mastercard-cen", "mastercard-gateway"] {
            let p = preset_only(name);
            let (status, ct, body) = p.answer.render(&x.events);
            assert_eq!((status, ct, body.len()), (200, None, 0), "{name}");
        }
    }
}
