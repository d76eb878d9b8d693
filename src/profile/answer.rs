//! What the sender is answered once its events are safe (or known duplicates): a fixed
//! status and body, or a body listing every event of the request with a status (Ethoca's
//! acknowledgement). A route's `answer:` block ([`AnswerOverrides`]) replaces the preset's.

use bytes::Bytes;
use serde::Deserialize;

use super::{Event, IdSource};

/// The profile's answer to an accepted or duplicate notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: AnswerBody,
}

/// What goes in the answer's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerBody {
    /// The same bytes for every request (usually none).
    Fixed(Bytes),
    /// One entry per event of the request, new and duplicate alike.
    PerEvent(PerEvent),
}

/// `{"<list>":[{"<id_field>":"<id>","<status_field>":"<status_value>"}, ...]}`, or the bare
/// array when `list` is empty.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerEvent {
    pub list: String,
    pub id_field: String,
    pub status_field: String,
    pub status_value: String,
}

/// Ethoca's acknowledgement as we assume it (the push spec's field names are unconfirmed):
/// `{"alerts":[{"alertId":"A…","status":"SUCCESS"}]}`.
impl Default for PerEvent {
    fn default() -> PerEvent {
        PerEvent {
            list: "alerts".into(),
            id_field: "alertId".into(),
            status_field: "status".into(),
            status_value: "SUCCESS".into(),
        }
    }
}

/// A route's `answer:` block. Each key replaces the preset's; `body` and `per_event` exclude
/// each other.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerOverrides {
    status: Option<u16>,
    content_type: Option<String>,
    body: Option<String>,
    per_event: Option<PerEvent>,
}

const JSON: &str = "application/json";

impl Answer {
    /// 200 with no body: what Cross-Border, CEN and the Gateway expect.
    pub fn empty() -> Answer {
        Answer {
            status: 200,
            content_type: None,
            body: AnswerBody::Fixed(Bytes::new()),
        }
    }

    /// 200, a JSON body acknowledging each event.
    pub fn per_event(p: PerEvent) -> Answer {
        Answer {
            status: 200,
            content_type: Some(JSON.into()),
            body: AnswerBody::PerEvent(p),
        }
    }

    /// This answer with a route's `answer:` block applied and checked.
    pub fn with_overrides(mut self, o: AnswerOverrides) -> Result<Answer, String> {
        match (o.body, o.per_event) {
            (Some(_), Some(_)) => return Err("answer.body and answer.per_event exclude each other".into()),
            (Some(body), None) => {
                // The preset's type described the preset's body, not this one.
                self.content_type = None;
                self.body = AnswerBody::Fixed(Bytes::from(body));
            }
            (None, Some(p)) => {
                check_per_event(&p)?;
                self.content_type.get_or_insert_with(|| JSON.into());
                self.body = AnswerBody::PerEvent(p);
            }
            (None, None) => {}
        }
        if let Some(status) = o.status {
            // Any other status makes the sender retry what was already taken.
            if !(200..300).contains(&status) {
                return Err(format!("answer.status {status} is not a 2xx status"));
            }
            self.status = status;
        }
        if let Some(ct) = o.content_type {
            http::HeaderValue::from_str(&ct)
                .map_err(|_| format!("answer.content_type `{ct}` is not a header value"))?;
            self.content_type = Some(ct);
        }
        Ok(self)
    }

    /// The answer for this request's events (all of them, new and duplicate alike: the sender
    /// wants each acknowledged).
    pub fn render(&self, events: &[Event]) -> (u16, Option<&str>, Bytes) {
        let body = match &self.body {
            AnswerBody::Fixed(b) => b.clone(),
            AnswerBody::PerEvent(p) => Bytes::from(p.render(events)),
        };
        (self.status, self.content_type.as_deref(), body)
    }
}

impl PerEvent {
    /// One entry per event, in the request's order. An event whose id pushgate had to hash
    /// carries no id of the sender's, so there is nothing to acknowledge it by: it is left out.
    fn render(&self, events: &[Event]) -> String {
        let entries: Vec<String> = events
            .iter()
            .filter(|e| e.id_source == IdSource::Sender)
            .map(|e| {
                format!(
                    "{{{}:{},{}:{}}}",
                    json_str(&self.id_field),
                    json_str(e.id.as_str()),
                    json_str(&self.status_field),
                    json_str(&self.status_value)
                )
            })
            .collect();
        let array = format!("[{}]", entries.join(","));
        if self.list.is_empty() {
            array
        } else {
            format!("{{{}:{array}}}", json_str(&self.list))
        }
    }
}

fn check_per_event(p: &PerEvent) -> Result<(), String> {
    if p.id_field.is_empty() || p.status_field.is_empty() {
        return Err("answer.per_event.id_field and status_field must not be empty".into());
    }
    if p.id_field == p.status_field {
        return Err("answer.per_event.id_field and status_field must differ".into());
    }
    Ok(())
}

/// A JSON string literal (quoted and escaped); written by hand so that the entries keep the
/// configured field order.
fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::EventId;

    fn event(id: &str, id_source: IdSource) -> Event {
        Event {
            id: EventId::new(id),
            id_source,
            bytes: Bytes::new(),
            ordering_key: None,
            fingerprint: 0,
        }
    }

    fn overrides(yaml: &str) -> AnswerOverrides {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn empty_answer_is_200_without_body() {
        let a = Answer::empty();
        let (status, ct, body) = a.render(&[event("E1", IdSource::Sender)]);
        assert_eq!((status, ct, body.len()), (200, None, 0));
    }

    #[test]
    fn per_event_lists_every_event_in_order() {
        let a = Answer::per_event(PerEvent::default());
        let events = [
            event("A4IM9K2MIYL9F2BPF9TWUIXTU", IdSource::Sender),
            event("B00000000000000000000000B", IdSource::Sender),
            // A repeat inside the request is acknowledged where it stands.
            event("A4IM9K2MIYL9F2BPF9TWUIXTU", IdSource::Sender),
        ];
        let (status, ct, body) = a.render(&events);
        assert_eq!((status, ct), (200, Some("application/json")));
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"alerts":[{"alertId":"A4IM9K2MIYL9F2BPF9TWUIXTU","status":"SUCCESS"},{"alertId":"B00000000000000000000000B","status":"SUCCESS"},{"alertId":"A4IM9K2MIYL9F2BPF9TWUIXTU","status":"SUCCESS"}]}"#
        );
    }

    #[test]
    fn per_event_escapes_and_skips_hashed_ids() {
        let p = PerEvent {
            list: String::new(),
            id_field: "id".into(),
            status_field: "st\"x".into(),
            status_value: "OK".into(),
        };
        let events = [event("a\"b", IdSource::Sender), event("sha256:00", IdSource::Hash)];
        let (_, _, body) = Answer::per_event(p).render(&events);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, serde_json::json!([{"id": "a\"b", "st\"x": "OK"}]));
    }

    #[test]
    fn overrides_replace_the_preset() {
        let a = Answer::empty()
            .with_overrides(overrides(
                "status: 202\ncontent_type: application/json\nbody: '{\"success\": true}'",
            ))
            .unwrap();
        let (status, ct, body) = a.render(&[]);
        assert_eq!(
            (status, ct, &body[..]),
            (202, Some("application/json"), &br#"{"success": true}"#[..])
        );

        let a = Answer::empty()
            .with_overrides(overrides("per_event: { list: acks, status_value: OK }"))
            .unwrap();
        let (_, ct, body) = a.render(&[event("X", IdSource::Sender)]);
        assert_eq!(ct, Some("application/json"));
        assert_eq!(&body[..], br#"{"acks":[{"alertId":"X","status":"OK"}]}"#);

        let a = Answer::per_event(PerEvent::default())
            .with_overrides(overrides("body: ''"))
            .unwrap();
        assert_eq!((a.body, a.content_type), (AnswerBody::Fixed(Bytes::new()), None));
    }

    #[test]
    fn bad_overrides_are_refused() {
        for (yaml, why) in [
            ("status: 500", "2xx"),
            ("status: 302", "2xx"),
            ("body: x\nper_event: {}", "exclude"),
            ("per_event: { id_field: s, status_field: s }", "differ"),
            ("per_event: { id_field: '' }", "empty"),
            ("content_type: \"a\\nb\"", "header value"),
        ] {
            let err = Answer::empty().with_overrides(overrides(yaml)).unwrap_err();
            assert!(err.contains(why), "{yaml}: {err}");
        }
        assert!(serde_yaml_ng::from_str::<AnswerOverrides>("per_event: { nope: 1 }").is_err());
        assert!(serde_yaml_ng::from_str::<AnswerOverrides>("bodyy: x").is_err());
    }
}
