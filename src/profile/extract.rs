//! The one event extractor: body + headers + [`EventSpec`] → the events it carries, each with
//! its id, its own bytes (a zero-copy slice of the body), its ordering key and the fingerprint
//! of its content. JSON is read by the borrowed walk in `json.rs`, XML by `xml.rs`.

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::json::{self, Paths, WalkError};
use super::xml::{self, WalkXmlError, XmlError};
use super::{BodyFormat, EventSpec};
use crate::names::EventId;

/// Longest id accepted from a sender; longer ones are refused rather than stored and logged.
pub const MAX_ID_LEN: usize = 256;
/// Most events one body may carry.
pub const MAX_EVENTS: usize = 10_000;

/// Where an id came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdSource {
    /// The sender named it (a header or a member of the body).
    Sender,
    /// The profile names an id but this event had none, so pushgate hashed the event (counted
    /// as `missing_id`).
    Hash,
    /// The profile names no id at all (CEN notifications have none): the event is keyed by its
    /// content by design. Not counted as `missing_id`; like `Hash`, nothing of the sender's
    /// to acknowledge it by.
    Content,
}

#[derive(Clone, Debug)]
pub struct Event {
    pub id: EventId,
    pub id_source: IdSource,
    /// The event's original bytes: the whole body, or its element of the batch.
    pub bytes: Bytes,
    pub ordering_key: Option<String>,
    /// 64 bits of SHA-256 over the event's content without its profile's volatile members:
    /// two events with one id and different fingerprints are different notifications. For
    /// JSON the content is its canonical JSON (so layout, member order and escapes do not
    /// count), for XML and forms the bytes. See docs/profiles.md, "Content fingerprint".
    pub fingerprint: u64,
}

#[derive(Clone, Debug)]
pub struct Extracted {
    pub events: Vec<Event>,
    /// The body was a batch: the app receives a JSON array of the new elements.
    pub batch: bool,
}

/// Why a body was refused (400, quarantined). Messages never quote the body: parsers'
/// messages are reduced to their category and position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body is not valid JSON ({0})")]
    NotJson(String),
    #[error("body is not a form (name=value&...)")]
    NotForm,
    #[error(transparent)]
    NotXml(#[from] XmlError),
    #[error("no array at {0}")]
    NoArray(String),
    #[error("batch is empty")]
    EmptyBatch,
    #[error("batch has more than {MAX_EVENTS} events")]
    TooManyEvents,
    #[error("event id is longer than {MAX_ID_LEN} bytes or not printable")]
    BadId,
    /// A member (or element, or form field) on a configured id, ordering-key or array path
    /// appears twice where one is expected: parsers that keep the first and the last would
    /// read two different ids from one body.
    #[error("ambiguous body: a member on the path {0} appears twice in one object")]
    Ambiguous(String),
    /// A member name appears twice in one object of a JSON event: its content id and
    /// fingerprint are taken over its content, which parsers keeping the first and the last
    /// value read differently.
    #[error("ambiguous body: a member name appears twice in one object")]
    Repeated,
}

impl From<WalkError> for BodyError {
    fn from(e: WalkError) -> BodyError {
        match e {
            WalkError::Syntax(s) => BodyError::NotJson(s),
            WalkError::Duplicate(p) => BodyError::Ambiguous(p),
            WalkError::Repeated => BodyError::Repeated,
            // Named by the caller, who knows the pointer.
            WalkError::NoArray => BodyError::NoArray(String::new()),
        }
    }
}

/// The compiled form of an [`EventSpec`]'s pointers, built once per spec.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The id pointers, then the ordering-key pointers.
    find: Paths,
    ids: usize,
    array: Option<Paths>,
    volatile: Paths,
    exclude: Paths,
    /// `volatile` and `hash_exclude` leave out the same members: one canonical JSON serves
    /// both the fingerprint and the content id (CEN).
    same_exclusions: bool,
}

impl Plan {
    pub(super) fn new(spec: &EventSpec) -> Plan {
        let pointers = spec.id_pointers.iter().chain(&spec.ordering_key);
        let mut volatile: Vec<&str> = spec.volatile.iter().map(String::as_str).collect();
        let mut excluded: Vec<String> = spec
            .hash_exclude
            .iter()
            .map(|n| format!("/{}", n.replace('~', "~0").replace('/', "~1")))
            .collect();
        volatile.sort_unstable();
        volatile.dedup();
        excluded.sort_unstable();
        excluded.dedup();
        Plan {
            find: Paths::new(pointers.map(String::as_str)),
            ids: spec.id_pointers.len(),
            array: spec.array.as_deref().map(|a| Paths::new([a])),
            volatile: Paths::new(spec.volatile.iter().map(String::as_str)),
            exclude: Paths::top_level(&spec.hash_exclude),
            same_exclusions: volatile == excluded.iter().map(String::as_str).collect::<Vec<_>>(),
        }
    }
}

/// Finds the events of one body.
pub fn extract(spec: &EventSpec, body: &Bytes, headers: &http::HeaderMap) -> Result<Extracted, BodyError> {
    let plan = spec.plan();
    match effective_format(spec.format, body, headers) {
        BodyFormat::Any => {
            let id = header_id(spec, headers)?;
            Ok(single(spec, body.clone(), id, None))
        }
        BodyFormat::Form => {
            let pairs = parse_form(body)?;
            let id = match header_id(spec, headers)? {
                Some(id) => Some(id),
                None => first_field(&pairs, &spec.id_pointers)?
                    .map(|v| checked_id(&v))
                    .transpose()?,
            };
            let key = first_field(&pairs, &spec.ordering_key)?;
            Ok(single(spec, body.clone(), id, key))
        }
        BodyFormat::Xml => {
            let text = std::str::from_utf8(body).map_err(|_| XmlError::Malformed("not UTF-8".into()))?;
            let found = xml::walk(text, &plan.find).map_err(|e| match e {
                WalkXmlError::Xml(e) => BodyError::NotXml(e),
                WalkXmlError::Duplicate(p) => BodyError::Ambiguous(p),
            })?;
            let first = |range: &[Option<String>]| range.iter().flatten().find(|s| !s.is_empty()).cloned();
            let id = match header_id(spec, headers)? {
                Some(id) => Some(id),
                None => first(&found[..plan.ids]).map(|s| checked_id(&s)).transpose()?,
            };
            let key = first(&found[plan.ids..]);
            Ok(single(spec, body.clone(), id, key))
        }
        // effective_format never answers JsonOrForm or JsonOrXml.
        BodyFormat::Json | BodyFormat::JsonOrForm | BodyFormat::JsonOrXml => {
            let text = std::str::from_utf8(body).map_err(|_| BodyError::NotJson("not UTF-8".into()))?;
            match (&plan.array, &spec.array) {
                (Some(array), Some(pointer)) => batch(spec, plan, body, text, array, pointer),
                _ => {
                    let header = header_id(spec, headers)?;
                    let event = json_event(spec, plan, body.clone(), text, header)?;
                    Ok(Extracted {
                        events: vec![event],
                        batch: false,
                    })
                }
            }
        }
    }
}

fn effective_format(format: BodyFormat, body: &[u8], headers: &http::HeaderMap) -> BodyFormat {
    let first = body
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(body)
        .iter()
        .find(|b| !b.is_ascii_whitespace());
    match format {
        // JSON cannot start with `<`, XML cannot start otherwise: the body says which it is,
        // whatever its Content-Type (a decrypted JWE's type is the envelope's).
        BodyFormat::JsonOrXml if first == Some(&b'<') => BodyFormat::Xml,
        BodyFormat::JsonOrXml => BodyFormat::Json,
        BodyFormat::JsonOrForm => {
            let ct = headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_ascii_lowercase();
            if ct.contains("json") {
                BodyFormat::Json
            } else if ct.contains("x-www-form-urlencoded") {
                BodyFormat::Form
            } else if matches!(first, Some(b'{' | b'[')) {
                BodyFormat::Json
            } else {
                BodyFormat::Form
            }
        }
        other => other,
    }
}

/// A body that is one event and whose content is hashed as bytes (forms, XML, `any`).
fn single(spec: &EventSpec, body: Bytes, id: Option<EventId>, ordering_key: Option<String>) -> Extracted {
    let digest = Sha256::digest(&body);
    let (id, id_source) = match id {
        Some(id) => (id, IdSource::Sender),
        None => (digest_id(&digest), no_id_source(spec)),
    };
    Extracted {
        events: vec![Event {
            id,
            id_source,
            fingerprint: fingerprint_of(&digest),
            bytes: body,
            ordering_key,
        }],
        batch: false,
    }
}

/// One JSON event (the body, or an element of a batch): one borrowed walk finds its id and
/// ordering key and writes its canonical JSON for the fingerprint.
fn json_event(
    spec: &EventSpec,
    plan: &Plan,
    bytes: Bytes,
    text: &str,
    header: Option<EventId>,
) -> Result<Event, BodyError> {
    let mut canonical = Vec::with_capacity(text.len());
    let walked = json::walk(text, &plan.find, Some(&plan.volatile), Some(&mut canonical))?;
    let first =
        |found: &[Option<json::Found<'_>>]| found.iter().flatten().find_map(json::Found::text).map(str::to_owned);
    let digest = Sha256::digest(&canonical);
    let sender = match header {
        Some(id) => Some(id),
        None => walked.found[..plan.ids]
            .iter()
            .flatten()
            .find_map(json::Found::text)
            .map(checked_id)
            .transpose()?,
    };
    let (id, id_source) = match sender {
        Some(id) => (id, IdSource::Sender),
        None if spec.hash_exclude.is_empty() => (bytes_hash(&bytes), no_id_source(spec)),
        None if plan.same_exclusions => (digest_id(&digest), no_id_source(spec)),
        None => {
            canonical.clear();
            json::walk(text, &Paths::default(), Some(&plan.exclude), Some(&mut canonical))?;
            (digest_id(&Sha256::digest(&canonical)), no_id_source(spec))
        }
    };
    Ok(Event {
        id,
        id_source,
        ordering_key: first(&walked.found[plan.ids..]),
        fingerprint: fingerprint_of(&digest),
        bytes,
    })
}

fn batch(
    spec: &EventSpec,
    plan: &Plan,
    body: &Bytes,
    text: &str,
    array: &Paths,
    pointer: &str,
) -> Result<Extracted, BodyError> {
    let elements = json::elements(text, array).map_err(|e| match e {
        WalkError::NoArray => BodyError::NoArray(pointer.to_string()),
        other => other.into(),
    })?;
    if elements.is_empty() {
        return Err(BodyError::EmptyBatch);
    }
    if elements.len() > MAX_EVENTS {
        return Err(BodyError::TooManyEvents);
    }
    let base = text.as_ptr() as usize;
    let mut events = Vec::with_capacity(elements.len());
    for raw in elements {
        // `raw` borrows from `text`, which is `body`: its offset makes a zero-copy slice.
        let start = raw.get().as_ptr() as usize - base;
        let bytes = body.slice(start..start + raw.get().len());
        events.push(json_event(spec, plan, bytes, raw.get(), None)?);
    }
    Ok(Extracted { events, batch: true })
}

/// Hash or Content: whether the profile expected an id from the sender.
fn no_id_source(spec: &EventSpec) -> IdSource {
    if spec.id_header.is_none() && spec.id_pointers.is_empty() {
        IdSource::Content
    } else {
        IdSource::Hash
    }
}

fn header_id(spec: &EventSpec, headers: &http::HeaderMap) -> Result<Option<EventId>, BodyError> {
    let Some(name) = &spec.id_header else { return Ok(None) };
    match headers.get(name) {
        None => Ok(None),
        Some(v) => {
            let s = v.to_str().map_err(|_| BodyError::BadId)?.trim();
            if s.is_empty() {
                Ok(None)
            } else {
                checked_id(s).map(Some)
            }
        }
    }
}

fn checked_id(s: &str) -> Result<EventId, BodyError> {
    if s.len() > MAX_ID_LEN || s.chars().any(|c| c.is_control()) {
        return Err(BodyError::BadId);
    }
    Ok(EventId::new(s))
}

fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, BodyError> {
    let text = std::str::from_utf8(body).map_err(|_| BodyError::NotForm)?;
    if !text.contains('=') {
        return Err(BodyError::NotForm);
    }
    Ok(form_urlencoded::parse(text.trim().as_bytes()).into_owned().collect())
}

/// A pointer `/order/id` names the form field `order.id` (the Gateway's NVP naming). A field
/// on a pointer's path given twice is ambiguous, as in JSON.
fn first_field(pairs: &[(String, String)], pointers: &[String]) -> Result<Option<String>, BodyError> {
    let mut first = None;
    for p in pointers {
        let name = p.trim_start_matches('/').replace('/', ".");
        let mut given = pairs.iter().filter(|(k, _)| *k == name);
        let value = given.next();
        if given.next().is_some() {
            return Err(BodyError::Ambiguous(p.clone()));
        }
        if first.is_none() {
            first = value.filter(|(_, v)| !v.is_empty()).map(|(_, v)| v.clone());
        }
    }
    Ok(first)
}

/// The id of an event without one: `sha256:` and the hex SHA-256 of its bytes.
pub fn bytes_hash(bytes: &[u8]) -> EventId {
    digest_id(&Sha256::digest(bytes))
}

fn digest_id(digest: &[u8]) -> EventId {
    EventId::new(&format!("sha256:{}", hex::encode(digest)))
}

fn fingerprint_of(digest: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The fingerprint of content taken as bytes (XML, forms, `any`): the first 8 bytes of its
/// SHA-256, big-endian. JSON events are fingerprinted over their canonical JSON instead.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    fingerprint_of(&Sha256::digest(bytes))
}

// The content id of an event without a sender id (CEN) is `sha256:` + the hex SHA-256 of
// its canonical JSON with the `hash_exclude` top-level members removed, so that a re-delivery
// that only changes an excluded member (CEN's `pushStatus`) or the layout keeps its id.
// Canonical JSON (written by json.rs; docs/profiles.md repeats this, keep them together):
// - no white space outside strings;
// - object members sorted by key, comparing the keys' UTF-8 bytes, at every depth (a key
//   repeated in one object has no canonical form: the event is refused, BodyError::Repeated);
// - array elements in their order;
// - strings with `"`, `\` and control characters escaped (`\n \r \t \b \f`, else `\u00xx` in
//   lower-case hex), everything else as raw UTF-8 (`/` and non-ASCII unescaped);
// - `true`, `false`, `null`; integers that fit in 64 bits in plain decimal; every other
//   number as the shortest text that reads back as the same IEEE 754 double, with a `.0`
//   when it would otherwise look like an integer (`1e2` → `100.0`, `1.50` → `1.5`).
#[cfg(test)]
mod tests {
    use super::*;

    fn spec(format: BodyFormat) -> EventSpec {
        EventSpec {
            format,
            array: None,
            id_header: None,
            id_pointers: vec![],
            hash_exclude: vec![],
            ordering_key: vec![],
            volatile: vec![],
            plan: Default::default(),
        }
    }

    fn run(spec: &EventSpec, body: &str, headers: &[(&str, &str)]) -> Result<Extracted, BodyError> {
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        extract(spec, &Bytes::from(body.to_string()), &h)
    }

    #[test]
    fn single_event_id_from_pointers_in_order() {
        let s = EventSpec {
            id_pointers: vec!["/eventRef".into(), "/event_ref".into()],
            ..spec(BodyFormat::Json)
        };
        let e = run(&s, r#"{"eventRef":"E1","x":1}"#, &[]).unwrap();
        assert_eq!(
            (e.events[0].id.as_str(), e.events[0].id_source, e.batch),
            ("E1", IdSource::Sender, false)
        );
        let e = run(&s, r#"{"event_ref":"e2"}"#, &[]).unwrap();
        assert_eq!(e.events[0].id.as_str(), "e2");
        let e = run(&s, r#"{"other":1}"#, &[]).unwrap();
        assert_eq!(e.events[0].id_source, IdSource::Hash);
        assert!(e.events[0].id.as_str().starts_with("sha256:"));
    }

    #[test]
    fn header_id_wins_and_form_bodies_give_ordering_keys() {
        let s = EventSpec {
            id_header: Some(http::HeaderName::from_static("x-notification-id")),
            ordering_key: vec!["/order/id".into()],
            ..spec(BodyFormat::JsonOrForm)
        };
        let e = run(&s, "order.id=O-1&result=SUCCESS", &[("x-notification-id", "N1")]).unwrap();
        assert_eq!(e.events[0].id.as_str(), "N1");
        assert_eq!(e.events[0].ordering_key.as_deref(), Some("O-1"));
        let e = run(&s, r#"{"order":{"id":"O-2"}}"#, &[]).unwrap();
        assert_eq!(
            (e.events[0].id_source, e.events[0].ordering_key.as_deref()),
            (IdSource::Hash, Some("O-2"))
        );
        assert_eq!(run(&s, "garbage", &[]).unwrap_err(), BodyError::NotForm);
    }

    #[test]
    fn batches_keep_each_elements_bytes() {
        let s = EventSpec {
            array: Some(String::new()),
            id_pointers: vec!["/idempotencyKey".into()],
            hash_exclude: vec!["pushStatus".into()],
            ..spec(BodyFormat::Json)
        };
        let body = r#"[ {"idempotencyKey":"k1", "a" : 1},{"b":2,"pushStatus":"PENDING"} ]"#;
        let e = run(&s, body, &[]).unwrap();
        assert!(e.batch);
        assert_eq!(&e.events[0].bytes[..], br#"{"idempotencyKey":"k1", "a" : 1}"#);
        assert_eq!(&e.events[1].bytes[..], br#"{"b":2,"pushStatus":"PENDING"}"#);
        // The same element re-pushed with another pushStatus and layout keeps its id.
        let again = run(&s, r#"[{"pushStatus":"DELIVERED",  "b":2}]"#, &[]).unwrap();
        assert_eq!(again.events[0].id, e.events[1].id);
        assert_eq!(run(&s, "[]", &[]).unwrap_err(), BodyError::EmptyBatch);
        assert!(matches!(run(&s, r#"{"a":1}"#, &[]), Err(BodyError::NoArray(_))));
    }

    #[test]
    fn nested_array_pointer() {
        let s = EventSpec {
            array: Some("/alerts".into()),
            id_pointers: vec!["/alertId".into()],
            ..spec(BodyFormat::Json)
        };
        let e = run(&s, r#"{"alerts":[{"alertId":"A1"},{"alertId":"A2"}],"n":2}"#, &[]).unwrap();
        let ids: Vec<_> = e.events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["A1", "A2"]);
        assert_eq!(&e.events[1].bytes[..], br#"{"alertId":"A2"}"#);
    }

    #[test]
    fn bad_bodies_never_quote_their_content() {
        let s = spec(BodyFormat::Json);
        let err = run(&s, r#"{"pan":"5555555555554444""#, &[]).unwrap_err().to_string();
        assert!(!err.contains("5555"), "{err}");
        assert!(matches!(run(&s, "\u{0}\u{1}", &[]), Err(BodyError::NotJson(_))));
        let s = EventSpec {
            id_pointers: vec!["/id".into()],
            ..spec(BodyFormat::Json)
        };
        let long = format!(r#"{{"id":"{}"}}"#, "x".repeat(MAX_ID_LEN + 1));
        assert_eq!(run(&s, &long, &[]).unwrap_err(), BodyError::BadId);
        let e = run(&s, r#"{"id":42}"#, &[]).unwrap();
        assert_eq!(e.events[0].id.as_str(), "42");
    }

    fn canonical(text: &str) -> String {
        let mut out = Vec::new();
        json::walk(text, &Paths::default(), None, Some(&mut out)).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// The canonical form as first written, over a `serde_json::Value`: the oracle the
    /// streaming writer in json.rs is held to.
    fn value_canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
        use serde_json::Value;
        match value {
            Value::Object(map) => {
                let mut members: Vec<_> = map.iter().collect();
                members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                out.push(b'{');
                for (i, (key, v)) in members.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(Value::String(key.clone()).to_string().as_bytes());
                    out.push(b':');
                    value_canonical(v, out);
                }
                out.push(b'}');
            }
            Value::Array(items) => {
                out.push(b'[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    value_canonical(v, out);
                }
                out.push(b']');
            }
            scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
        }
    }

    #[test]
    fn canonical_json_is_as_documented() {
        // Keys sorted by bytes at every depth, no white space, numbers normalised.
        assert_eq!(
            canonical(r#" { "b" : 1, "a" : { "y" : [ 1, 2.50, 1e2 ], "x" : "\u00e9" }, "B": null } "#),
            r#"{"B":null,"a":{"x":"é","y":[1,2.5,100.0]},"b":1}"#
        );
        // Escapes: quote, backslash, control characters; `/` and non-ASCII stay raw.
        assert_eq!(
            canonical(r#"["a\"b\\c\/d\n\u0001\u007f€"]"#),
            "[\"a\\\"b\\\\c/d\\n\\u0001\u{7f}€\"]"
        );
        assert_eq!(canonical(r#"{"k":1,"j":0,"a":[]}"#), r#"{"a":[],"j":0,"k":1}"#);
        assert_eq!(
            canonical("[true,false,null,-7,18446744073709551615]"),
            "[true,false,null,-7,18446744073709551615]"
        );
        assert_eq!(canonical("[[],{},[[]],[{}],\"\"]"), "[[],{},[[]],[{}],\"\"]");
    }

    /// The streaming writer agrees with the Value-based oracle on every sample and on shapes
    /// that stress numbers, escapes, repeats and nesting.
    #[test]
    fn streaming_canonical_matches_the_value_oracle() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/samples");
        let mut texts: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        texts.extend(
            [
                r#"{"n":[0,-0,1.0,-1.5e-7,1e300,123456789012345678901234567890,-9223372036854775808,0.1]}"#,
                r#"{"\u0000k\t":"\ud83d\ude00 \u2028","k\u0000":{"z":{"y":{"x":[{"w":null}]}}}}"#,
                r#"{"a":1,"b":{"c":2,"C":{"d":3}},"A":{"e":[1,{"f":2,"F":3}]}}"#,
                r#"[{"ä":1,"a":2,"Z":3,"":4}]"#,
            ]
            .map(String::from),
        );
        for text in &texts {
            let mut want = Vec::new();
            value_canonical(&serde_json::from_str(text).unwrap(), &mut want);
            assert_eq!(canonical(text), String::from_utf8(want).unwrap(), "{text}");
        }
    }

    fn cen_spec() -> EventSpec {
        EventSpec {
            array: Some(String::new()),
            hash_exclude: vec!["pushStatus".into()],
            volatile: vec!["/pushStatus".into()],
            ..spec(BodyFormat::Json)
        }
    }

    fn one(spec: &EventSpec, body: &str) -> Event {
        run(spec, body, &[]).unwrap().events.remove(0)
    }

    #[test]
    fn content_ids_ignore_layout_order_and_excluded_fields() {
        let s = cen_spec();
        let a = one(
            &s,
            r#"[{"subject":"CLEARING","content":{"b":1,"a":2},"pushStatus":"PENDING"}]"#,
        );
        // 1 and 1.0 are different numbers to serde_json: only the integer form matches.
        let b = one(
            &s,
            r#"[{ "pushStatus":"DELIVERED", "content":{"a":2, "b":1.0e0}, "subject":"CLEARING" }]"#,
        );
        assert_ne!(a.id, b.id);
        let c = one(
            &s,
            r#"[{ "pushStatus":"DELIVERED", "content":{"a":2, "b":1}, "subject":"CLEARING" }]"#,
        );
        assert_eq!((&a.id, a.fingerprint), (&c.id, c.fingerprint));
        assert_eq!(a.id_source, IdSource::Content);
        // Only top-level fields are excluded.
        let nested = one(&s, r#"[{"content":{"pushStatus":"X"}}]"#);
        let other = one(&s, r#"[{"content":{"pushStatus":"Y"}}]"#);
        assert_ne!(nested.id, other.id);
        // The documented worked example (docs/profiles.md).
        let digest = Sha256::digest(br#"{"content":{"a":2,"b":1},"subject":"CLEARING"}"#);
        assert_eq!(a.id.as_str(), format!("sha256:{}", hex::encode(digest)));
        assert_eq!(a.fingerprint, u64::from_be_bytes(digest[..8].try_into().unwrap()));
    }

    /// `hash_exclude` without the same `volatile`: the content id and the fingerprint are two
    /// canonical forms, each without its own members.
    #[test]
    fn content_ids_and_fingerprints_exclude_independently() {
        let s = EventSpec {
            hash_exclude: vec!["sentAt".into()],
            volatile: vec![],
            ..cen_spec()
        };
        let a = one(&s, r#"[{"n":1,"sentAt":"t1"}]"#);
        let b = one(&s, r#"[{"n":1,"sentAt":"t2"}]"#);
        assert_eq!(a.id, b.id);
        assert_ne!(a.fingerprint, b.fingerprint, "sentAt is content to the fingerprint");
        let digest = Sha256::digest(br#"{"n":1}"#);
        assert_eq!(a.id.as_str(), format!("sha256:{}", hex::encode(digest)));
    }

    #[test]
    fn fingerprints_leave_out_volatile_members_only() {
        let s = EventSpec {
            id_pointers: vec!["/eventRef".into()],
            volatile: vec!["/meta/sentAt".into(), "/attempt".into()],
            ..spec(BodyFormat::Json)
        };
        let a = one(
            &s,
            r#"{"eventRef":"E","status":"PENDING","attempt":1,"meta":{"sentAt":"t1","v":1}}"#,
        );
        // Another layout, member order, escape and volatile values: the same content.
        let b = one(
            &s,
            "{ \"meta\" : {\"v\":1, \"sentAt\":\"t2\"}, \"attempt\":2,\n \"status\":\"PEN\\u0044ING\", \"eventRef\":\"E\" }",
        );
        assert_eq!((&a.id, a.fingerprint), (&b.id, b.fingerprint));
        // Any other change is another content, under the same id.
        let c = one(
            &s,
            r#"{"eventRef":"E","status":"SUCCESS","attempt":1,"meta":{"sentAt":"t1","v":1}}"#,
        );
        assert_eq!(a.id, c.id);
        assert_ne!(a.fingerprint, c.fingerprint);
        // Without volatile members the fingerprint is SHA-256 of the canonical JSON.
        let plain = one(&spec(BodyFormat::Json), r#"{ "b":1, "a":2 }"#);
        let digest = Sha256::digest(br#"{"a":2,"b":1}"#);
        assert_eq!(plain.fingerprint, u64::from_be_bytes(digest[..8].try_into().unwrap()));
        // Forms, XML and opaque bodies: SHA-256 of the bytes, as `fingerprint` computes it.
        for (format, body) in [
            (BodyFormat::Form, "a=1&b=2"),
            (BodyFormat::Xml, "<r><b>1</b></r>"),
            (BodyFormat::Any, "\u{0}opaque"),
        ] {
            assert_eq!(
                one(&spec(format), body).fingerprint,
                fingerprint(body.as_bytes()),
                "{body}"
            );
        }
    }

    #[test]
    fn a_path_member_written_twice_is_ambiguous() {
        let xbs = EventSpec {
            id_pointers: vec!["/eventRef".into(), "/event_ref".into()],
            ordering_key: vec!["/order/id".into()],
            ..spec(BodyFormat::JsonOrXml)
        };
        for body in [
            r#"{"eventRef":"A","x":1,"eventRef":"B"}"#,
            r#"{"eventRef":"A","event\u0052ef":"B"}"#,
            r#"{"eventRef":"A","eventRef":"A"}"#,
            r#"{"event_ref":"A","event_ref":"B"}"#,
            r#"{"eventRef":"A","order":{"id":1,"id":2}}"#,
            r#"{"eventRef":"A","order":{"id":1},"order":{}}"#,
            "<r><eventRef>A</eventRef><eventRef>B</eventRef></r>",
            "<r><eventRef>A</eventRef><x:eventRef>B</x:eventRef></r>",
        ] {
            assert!(matches!(run(&xbs, body, &[]), Err(BodyError::Ambiguous(_))), "{body}");
        }
        // Twice anywhere else in an event: its content (fingerprint, content id) is ambiguous.
        for body in [
            r#"{"eventRef":"A","x":1,"x":2}"#,
            r#"{"eventRef":"A","y":{"eventRef":"B","event\u0052ef":"C"}}"#,
            r#"[{"eventRef":"A","y":[{"z":1,"z":1}]}]"#,
        ] {
            assert_eq!(run(&xbs, body, &[]).unwrap_err(), BodyError::Repeated, "{body}");
        }
        // Outside the events (beside a batch's array) a repeat reads the same to every parser.
        let ethoca = EventSpec {
            array: Some("/alerts".into()),
            ..spec(BodyFormat::Json)
        };
        assert!(run(&ethoca, r#"{"alerts":[{}],"n":1,"n":2}"#, &[]).is_ok());
        // Both spellings at once are not a repeat: the first pointer wins.
        assert_eq!(one(&xbs, r#"{"event_ref":"B","eventRef":"A"}"#).id.as_str(), "A");

        let cen = EventSpec {
            id_pointers: vec!["/idempotencyKey".into()],
            ..cen_spec()
        };
        let err = run(&cen, r#"[{"a":1},{"idempotencyKey":"k","idempotencyKey":"j"}]"#, &[]).unwrap_err();
        assert_eq!(err, BodyError::Ambiguous("/idempotencyKey".into()));
        let ethoca = EventSpec {
            array: Some("/alerts".into()),
            id_pointers: vec!["/alertId".into()],
            ..spec(BodyFormat::Json)
        };
        for body in [
            r#"{"alerts":[{"alertId":"A1","alert\u0049d":"A2"}]}"#,
            r#"{"alerts":[{"alertId":"A1"}],"alerts":[{"alertId":"A2"}]}"#,
        ] {
            assert!(
                matches!(run(&ethoca, body, &[]), Err(BodyError::Ambiguous(_))),
                "{body}"
            );
        }
        let form = EventSpec {
            ordering_key: vec!["/order/id".into()],
            ..spec(BodyFormat::Form)
        };
        assert_eq!(
            run(&form, "order.id=1&order.id=2", &[]).unwrap_err(),
            BodyError::Ambiguous("/order/id".into())
        );
    }

    #[test]
    fn xml_bodies_give_ids_or_their_hash_and_refuse_entities() {
        let s = EventSpec {
            id_pointers: vec!["/eventRef".into(), "/event_ref".into()],
            ..spec(BodyFormat::JsonOrXml)
        };
        let x = run(
            &s,
            "\u{feff} <?xml version='1.0'?><s><event_ref>ref_1</event_ref></s>",
            &[],
        )
        .unwrap();
        assert_eq!(
            (x.events[0].id.as_str(), x.events[0].id_source),
            ("ref_1", IdSource::Sender)
        );
        let body = "<rates><bid_rate>3.2</bid_rate></rates>";
        let x = run(&s, body, &[("content-type", "application/json")]).unwrap();
        assert_eq!(x.events[0].id, bytes_hash(body.as_bytes()));
        assert_eq!(x.events[0].id_source, IdSource::Hash);
        assert_eq!(
            run(&s, r#"<!DOCTYPE r SYSTEM "http://x/"><r/>"#, &[]).unwrap_err(),
            BodyError::NotXml(XmlError::Doctype)
        );
        assert_eq!(
            run(&s, "<r>&x;</r>", &[]).unwrap_err(),
            BodyError::NotXml(XmlError::Entity)
        );
        // JSON still goes the JSON way on the same route.
        assert_eq!(one(&s, r#"{"eventRef":"J"}"#).id.as_str(), "J");
    }
}
