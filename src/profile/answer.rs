//! What the sender is answered once its events are safe (or known duplicates).

use bytes::Bytes;

use super::Event;

/// The profile's answer to an accepted or duplicate notification.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub body: Bytes,
}

impl Answer {
    /// 200 with no body: what Cross-Border, CEN and the Gateway expect.
    pub fn empty() -> Answer {
        Answer {
            status: 200,
            content_type: None,
            body: Bytes::new(),
        }
    }

    /// The answer for this request's events (all of them, new and duplicate alike: the sender
    /// wants each acknowledged).
    pub fn render(&self, _events: &[Event]) -> (u16, Option<&'static str>, Bytes) {
        (self.status, self.content_type, self.body.clone())
    }
}
