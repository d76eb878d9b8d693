//! The one event extractor: body + headers + [`EventSpec`] → the events it carries, each with
//! its id, its own bytes (a zero-copy slice of the body) and its ordering key.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{BodyFormat, EventSpec};

/// Longest id accepted from a sender; longer ones are refused rather than stored and logged.
pub const MAX_ID_LEN: usize = 256;
/// Most events one body may carry.
pub const MAX_EVENTS: usize = 10_000;

/// An event's dedupe key within its route.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(Arc<str>);

impl EventId {
    pub fn new(s: &str) -> EventId {
        EventId(Arc::from(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an id came from: the sender named it, or pushgate hashed the event (counted as
/// `missing_id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdSource {
    Sender,
    Hash,
}

#[derive(Clone, Debug)]
pub struct Event {
    pub id: EventId,
    pub id_source: IdSource,
    /// The event's original bytes: the whole body, or its element of the batch.
    pub bytes: Bytes,
    pub ordering_key: Option<String>,
    /// What the event says, reduced to 64 bits ([`fingerprint`]): a later event with the same id
    /// but another fingerprint is a different event, not a retry.
    pub fingerprint: u64,
}

/// The first 8 bytes (big-endian) of SHA-256 of an event's bytes.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let d = Sha256::digest(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_be_bytes(first)
}

#[derive(Clone, Debug)]
pub struct Extracted {
    pub events: Vec<Event>,
    /// The body was a batch: the app receives a JSON array of the new elements.
    pub batch: bool,
}

/// Why a body was refused (400, quarantined). Messages never quote the body: serde_json's
/// messages are reduced to their category and position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body is not valid JSON ({0})")]
    NotJson(String),
    #[error("body is not a form (name=value&...)")]
    NotForm,
    #[error("no array at {0}")]
    NoArray(String),
    #[error("batch is empty")]
    EmptyBatch,
    #[error("batch has more than {MAX_EVENTS} events")]
    TooManyEvents,
    #[error("event id is longer than {MAX_ID_LEN} bytes or not printable")]
    BadId,
}

fn json_error(e: &serde_json::Error) -> BodyError {
    use serde_json::error::Category;
    let kind = match e.classify() {
        Category::Io => "i/o",
        Category::Syntax => "syntax",
        Category::Data => "data",
        Category::Eof => "truncated",
    };
    BodyError::NotJson(format!("{kind} error at line {} column {}", e.line(), e.column()))
}

/// Finds the events of one body.
pub fn extract(spec: &EventSpec, body: &Bytes, headers: &http::HeaderMap) -> Result<Extracted, BodyError> {
    match effective_format(spec.format, body, headers) {
        BodyFormat::Any => {
            let id = header_id(spec, headers)?;
            Ok(single(body.clone(), id, None))
        }
        BodyFormat::Form => {
            let pairs = parse_form(body)?;
            let id = match header_id(spec, headers)? {
                Some(id) => Some(id),
                None => first_field(&pairs, &spec.id_pointers)
                    .map(|v| checked_id(&v))
                    .transpose()?,
            };
            let key = first_field(&pairs, &spec.ordering_key);
            Ok(single(body.clone(), id, key))
        }
        // effective_format never answers JsonOrForm.
        BodyFormat::Json | BodyFormat::JsonOrForm => {
            let text = std::str::from_utf8(body).map_err(|_| BodyError::NotJson("not UTF-8".into()))?;
            match &spec.array {
                None => {
                    let value: Value = serde_json::from_str(text).map_err(|e| json_error(&e))?;
                    let id = match header_id(spec, headers)? {
                        Some(id) => Some(id),
                        None => pointer_id(&value, &spec.id_pointers)?,
                    };
                    let key = pointer_str(&value, &spec.ordering_key);
                    let mut extracted = single(body.clone(), id, key);
                    if let (IdSource::Hash, false) = (extracted.events[0].id_source, spec.hash_exclude.is_empty()) {
                        extracted.events[0].id = canonical_hash(value, &spec.hash_exclude);
                    }
                    Ok(extracted)
                }
                Some(pointer) => batch(spec, body, text, pointer),
            }
        }
    }
}

fn effective_format(format: BodyFormat, body: &[u8], headers: &http::HeaderMap) -> BodyFormat {
    if format != BodyFormat::JsonOrForm {
        return format;
    }
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.contains("json") {
        BodyFormat::Json
    } else if ct.contains("x-www-form-urlencoded") {
        BodyFormat::Form
    } else if matches!(body.iter().find(|b| !b.is_ascii_whitespace()), Some(b'{' | b'[')) {
        BodyFormat::Json
    } else {
        BodyFormat::Form
    }
}

fn single(body: Bytes, id: Option<EventId>, ordering_key: Option<String>) -> Extracted {
    let (id, id_source) = match id {
        Some(id) => (id, IdSource::Sender),
        None => (bytes_hash(&body), IdSource::Hash),
    };
    Extracted {
        events: vec![Event {
            id,
            id_source,
            fingerprint: fingerprint(&body),
            bytes: body,
            ordering_key,
        }],
        batch: false,
    }
}

fn batch(spec: &EventSpec, body: &Bytes, text: &str, pointer: &str) -> Result<Extracted, BodyError> {
    let array = raw_at(text, pointer)?.ok_or_else(|| BodyError::NoArray(pointer.to_string()))?;
    let elements: Vec<&RawValue> =
        serde_json::from_str(array.get()).map_err(|_| BodyError::NoArray(pointer.to_string()))?;
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
        let value: Value = serde_json::from_str(raw.get()).map_err(|e| json_error(&e))?;
        let ordering_key = pointer_str(&value, &spec.ordering_key);
        let (id, id_source) = match pointer_id(&value, &spec.id_pointers)? {
            Some(id) => (id, IdSource::Sender),
            None if spec.hash_exclude.is_empty() => (bytes_hash(&bytes), IdSource::Hash),
            None => (canonical_hash(value, &spec.hash_exclude), IdSource::Hash),
        };
        events.push(Event {
            id,
            id_source,
            fingerprint: fingerprint(&bytes),
            bytes,
            ordering_key,
        });
    }
    Ok(Extracted { events, batch: true })
}

/// The raw JSON at `pointer`, borrowed from `text` (so element offsets stay in the body).
fn raw_at<'a>(text: &'a str, pointer: &str) -> Result<Option<&'a RawValue>, BodyError> {
    let mut current: &'a RawValue = serde_json::from_str(text).map_err(|e| json_error(&e))?;
    if pointer.is_empty() {
        return Ok(Some(current));
    }
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        let next =
            if let Ok(map) = serde_json::from_str::<std::collections::HashMap<String, &'a RawValue>>(current.get()) {
                map.get(&token).copied()
            } else if let Ok(list) = serde_json::from_str::<Vec<&'a RawValue>>(current.get()) {
                token.parse::<usize>().ok().and_then(|i| list.get(i).copied())
            } else {
                None
            };
        match next {
            Some(n) => current = n,
            None => return Ok(None),
        }
    }
    Ok(Some(current))
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

/// The first pointer that leads to a non-empty string or a number.
fn pointer_id(value: &Value, pointers: &[String]) -> Result<Option<EventId>, BodyError> {
    match pointer_str(value, pointers) {
        Some(s) => checked_id(&s).map(Some),
        None => Ok(None),
    }
}

fn pointer_str(value: &Value, pointers: &[String]) -> Option<String> {
    pointers.iter().find_map(|p| match value.pointer(p)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, BodyError> {
    let text = std::str::from_utf8(body).map_err(|_| BodyError::NotForm)?;
    if !text.contains('=') {
        return Err(BodyError::NotForm);
    }
    Ok(form_urlencoded::parse(text.trim().as_bytes()).into_owned().collect())
}

/// A pointer `/order/id` names the form field `order.id` (the Gateway's NVP naming).
fn first_field(pairs: &[(String, String)], pointers: &[String]) -> Option<String> {
    pointers.iter().find_map(|p| {
        let name = p.trim_start_matches('/').replace('/', ".");
        pairs
            .iter()
            .find(|(k, v)| *k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
    })
}

fn bytes_hash(bytes: &[u8]) -> EventId {
    EventId::new(&format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
}

/// SHA-256 of the event's canonical JSON with the `exclude` top-level fields removed, so that
/// a re-delivery that only changes an excluded field (CEN's `pushStatus`) or the layout keeps
/// its id. Canonical JSON (docs/profiles.md repeats this; keep them together):
/// - no white space outside strings;
/// - object members sorted by key, comparing the keys' UTF-8 bytes, at every depth; when a
///   key is repeated the last value counts (as in any JSON parser that keeps one);
/// - array elements in their order;
/// - strings with `"`, `\` and control characters escaped (`\n \r \t \b \f`, else
///   `\u00xx` in lower-case hex), everything else as raw UTF-8 (`/` and non-ASCII unescaped);
/// - `true`, `false`, `null`; integers that fit in 64 bits in plain decimal; every other
///   number as the shortest text that reads back as the same IEEE 754 double, with a `.0`
///   when it would otherwise look like an integer (`1e2` → `100.0`, `1.50` → `1.5`).
///
/// The id is `sha256:` and the lower-case hex digest of those bytes.
fn canonical_hash(mut value: Value, exclude: &[String]) -> EventId {
    if let Value::Object(map) = &mut value {
        for field in exclude {
            map.remove(field);
        }
    }
    let mut canonical = Vec::new();
    write_canonical(&value, &mut canonical);
    bytes_hash(&canonical)
}

/// Sorts keys itself rather than relying on serde_json's map order, which a dependency that
/// turns on `preserve_order` would silently change. Recursion is bounded by serde_json's parse
/// depth limit (128).
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(key.clone()), out);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

/// Strings, numbers, booleans and null as serde_json writes them (compact).
fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    out.extend_from_slice(value.to_string().as_bytes());
}

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
        write_canonical(&serde_json::from_str(text).unwrap(), &mut out);
        String::from_utf8(out).unwrap()
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
        assert_eq!(canonical(r#"{"k":1,"k":2}"#), r#"{"k":2}"#);
        assert_eq!(
            canonical("[true,false,null,-7,18446744073709551615]"),
            "[true,false,null,-7,18446744073709551615]"
        );
    }

    #[test]
    fn canonical_hash_ignores_layout_order_and_excluded_fields() {
        let exclude = vec!["pushStatus".to_string()];
        let a: Value =
            serde_json::from_str(r#"{"subject":"CLEARING","content":{"b":1,"a":2},"pushStatus":"PENDING"}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{ "pushStatus":"DELIVERED", "content":{"a":2, "b":1.0e0}, "subject":"CLEARING" }"#)
                .unwrap();
        // 1 and 1.0 are different numbers to serde_json: only the integer form matches.
        assert_ne!(canonical_hash(a.clone(), &exclude), canonical_hash(b, &exclude));
        let c: Value =
            serde_json::from_str(r#"{ "pushStatus":"DELIVERED", "content":{"a":2, "b":1}, "subject":"CLEARING" }"#)
                .unwrap();
        assert_eq!(canonical_hash(a.clone(), &exclude), canonical_hash(c, &exclude));
        // Only top-level fields are excluded.
        let nested: Value = serde_json::from_str(r#"{"content":{"pushStatus":"X"}}"#).unwrap();
        let other: Value = serde_json::from_str(r#"{"content":{"pushStatus":"Y"}}"#).unwrap();
        assert_ne!(canonical_hash(nested, &exclude), canonical_hash(other, &exclude));
        // The documented worked example (docs/profiles.md).
        assert_eq!(
            canonical_hash(a, &exclude).as_str(),
            format!(
                "sha256:{}",
                hex::encode(Sha256::digest(br#"{"content":{"a":2,"b":1},"subject":"CLEARING"}"#))
            )
        );
    }
}
