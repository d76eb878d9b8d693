//! The Cross-Border envelope around a JWE, in both forms Mastercard documents:
//! `{"encrypted_payload":{"data":"<JWE>"}}` and `<encrypted_payload><data>JWE</data></encrypted_payload>`.

use quick_xml::events::Event;
use quick_xml::Reader;

use super::{decrypt_compact, DecryptKey, Decrypted, JweError};

/// Ok(None): the body is not an envelope (and header did not claim it is).
pub fn decrypt_envelope(
    body: &[u8],
    header_says_encrypted: bool,
    keys: &[DecryptKey],
) -> Result<Option<Decrypted>, JweError> {
    let start = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body).trim_ascii_start();
    let jwe = match start.first() {
        Some(b'<') => xml_jwe(body)?,
        _ => json_jwe(body)?,
    };
    match jwe {
        Some(jwe) => decrypt_compact(&jwe, keys).map(Some),
        None if header_says_encrypted => Err(JweError::NotAnEnvelope),
        None => Ok(None),
    }
}

fn json_jwe(body: &[u8]) -> Result<Option<String>, JweError> {
    let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    // `get` on a non-object yields None, so arrays/strings/etc. count as "not an envelope".
    match value.as_ref().and_then(|v| v.get("encrypted_payload")) {
        Some(payload) => match payload.get("data").and_then(serde_json::Value::as_str) {
            Some(jwe) => Ok(Some(jwe.to_owned())),
            // An encrypted_payload key is a clear claim of encryption; never pass it on as plaintext.
            None => Err(JweError::Malformed("encrypted_payload has no string data")),
        },
        None => Ok(None),
    }
}

/// The text of `<data>` under a root `<encrypted_payload>` (any namespace prefix); other roots
/// are not envelopes. A DOCTYPE anywhere is refused: no DTD is read and no entity expanded.
fn xml_jwe(body: &[u8]) -> Result<Option<String>, JweError> {
    const BAD_XML: JweError = JweError::Malformed("encrypted_payload is not well-formed XML");
    let Ok(text) = std::str::from_utf8(body) else {
        return Ok(None);
    };
    let mut reader = Reader::from_str(text);
    let mut root_seen = false;
    let mut depth = 0usize;
    let mut in_data = false;
    let mut data: Option<String> = None;
    loop {
        let event = match reader.read_event() {
            Ok(e) => e,
            // Not XML we understand: as an envelope it is refused, as anything else the profile decides.
            Err(_) if !root_seen => return Ok(None),
            Err(_) => return Err(BAD_XML),
        };
        match event {
            Event::DocType(_) => return Err(JweError::Malformed("XML with a DOCTYPE is not accepted")),
            Event::Start(_) | Event::Empty(_) if depth == 0 && root_seen => return Err(BAD_XML),
            Event::Start(e) | Event::Empty(e) if depth == 0 && e.local_name().as_ref() != "encrypted_payload" => {
                return Ok(None);
            }
            Event::Empty(_) if depth == 0 => return Err(JweError::Malformed("encrypted_payload has no data")),
            Event::Start(e) => {
                root_seen = true;
                if in_data {
                    return Err(JweError::Malformed("encrypted_payload data holds markup"));
                }
                if depth == 1 && e.local_name().as_ref() == "data" {
                    if data.is_some() {
                        return Err(JweError::Malformed("encrypted_payload has two data elements"));
                    }
                    in_data = true;
                    data = Some(String::new());
                }
                depth += 1;
            }
            Event::Empty(e) if in_data || (depth == 1 && e.local_name().as_ref() == "data") => {
                return Err(JweError::Malformed("encrypted_payload data is not text"));
            }
            Event::End(_) => {
                in_data = false;
                depth = depth.saturating_sub(1);
            }
            Event::Text(t) if in_data => push(&mut data, &t),
            Event::CData(t) if in_data => push(&mut data, &t),
            // A JWE is base64 and dots: an entity or character reference inside it is not one.
            Event::GeneralRef(_) if in_data => {
                return Err(JweError::Malformed("encrypted_payload data has a reference"))
            }
            Event::Eof => break,
            _ => {}
        }
    }
    match data {
        _ if !root_seen => Ok(None),
        Some(jwe) if depth == 0 => Ok(Some(jwe)),
        Some(_) => Err(BAD_XML),
        None => Err(JweError::Malformed("encrypted_payload has no data")),
    }
}

fn push(data: &mut Option<String>, text: &str) {
    if let Some(d) = data {
        d.push_str(text);
    }
}
