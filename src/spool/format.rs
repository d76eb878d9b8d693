//! The log's on-disk record format, and nothing else: framing, CRC, and each record kind's
//! payload. Every record is `[len u32][crc u32][kind u8][payload]` (little endian), where `len`
//! is the payload length and `crc` is CRC-32 (crc32fast, SIMD) over `len`, `kind` and payload,
//! so a torn or flipped length is caught as surely as a flipped payload byte.
//!
//! | kind | payload | written by |
//! |---|---|---|
//! | 1 header | magic `PGSPOOL1`, next seq at the segment's creation | first record of a segment |
//! | 2 append | seq, state fields, meta JSON length, [`Meta`] as JSON, body | append, copy-forward |
//! | 3 state | seq, state, attempts, next attempt, updated, last error | mark_*, replay (lazy or not) |
//! | 4 remove | seq | purge, compact |
//! | 5 probe | time | readiness probe |
//!
//! The binary prefix of an append repeats the fields the in-memory index needs (route and state
//! included), so start-up never parses JSON; the JSON is read back only by `meta()`.

use super::model::{Meta, Seq, State};

pub(crate) const HEADER_LEN: usize = 9;
pub(crate) const MAGIC: &[u8; 8] = b"PGSPOOL1";
/// Largest payload accepted when reading; anything bigger is a damaged length field.
pub(crate) const MAX_PAYLOAD: u32 = 1 << 30;

pub(crate) const KIND_HEADER: u8 = 1;
pub(crate) const KIND_APPEND: u8 = 2;
pub(crate) const KIND_STATE: u8 = 3;
pub(crate) const KIND_REMOVE: u8 = 4;
pub(crate) const KIND_PROBE: u8 = 5;

/// Fixed bytes of an append payload: seq, received, updated, next attempt, attempts, state,
/// route length, meta length; then the route, the meta JSON and the body.
pub(crate) const APPEND_FIXED: usize = 8 + 8 + 8 + 8 + 4 + 1 + 2 + 4;

/// Appends one framed record to `buf`; returns the record's offset in `buf`.
pub(crate) fn frame(buf: &mut Vec<u8>, kind: u8, payload: impl FnOnce(&mut Vec<u8>)) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; HEADER_LEN]);
    buf[start + 8] = kind;
    payload(buf);
    let len = (buf.len() - start - HEADER_LEN) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let crc = crc(&buf[start..start + 4], &buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    start
}

fn crc(len: &[u8], rest: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(rest);
    h.finalize()
}

/// What [`read`] found at an offset.
pub(crate) enum Found<'a> {
    /// A whole record with a good CRC; `next` is the offset after it.
    Record { kind: u8, payload: &'a [u8], next: usize },
    /// Zeros where a header would be: the unwritten rest of a preallocated segment.
    End,
    /// A header or payload that is cut off or fails its CRC.
    Bad,
}

pub(crate) fn read(data: &[u8], at: usize) -> Found<'_> {
    let Some(head) = data.get(at..at + HEADER_LEN) else {
        return if data[at.min(data.len())..].iter().all(|&b| b == 0) {
            Found::End
        } else {
            Found::Bad
        };
    };
    if head.iter().all(|&b| b == 0) {
        return Found::End;
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let want = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let kind = head[8];
    if len > MAX_PAYLOAD || !(KIND_HEADER..=KIND_PROBE).contains(&kind) {
        return Found::Bad;
    }
    let end = at + HEADER_LEN + len as usize;
    let Some(payload) = data.get(at + HEADER_LEN..end) else {
        return Found::Bad;
    };
    if crc(&head[..4], &data[at + 8..end]) != want {
        return Found::Bad;
    }
    Found::Record {
        kind,
        payload,
        next: end,
    }
}

/// The next offset after `from` where a whole, CRC-valid record starts (resynchronising after
/// damage); `None` if there is none before the end of the written data.
pub(crate) fn resync(data: &[u8], from: usize) -> Option<usize> {
    (from..data.len().saturating_sub(HEADER_LEN)).find(|&at| matches!(read(data, at), Found::Record { .. }))
}

pub(crate) fn header(buf: &mut Vec<u8>, next_seq: Seq) -> usize {
    frame(buf, KIND_HEADER, |b| {
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&next_seq.to_le_bytes());
    })
}

pub(crate) fn parse_header(p: &[u8]) -> Option<Seq> {
    (p.len() == 16 && &p[..8] == MAGIC).then(|| le64(&p[8..16]))
}

/// Where the parts of an append record lie, relative to the record's start.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AppendLayout {
    pub meta_at: u32,
    pub meta_len: u32,
    pub body_at: u32,
    pub body_len: u32,
}

/// Encodes an append of `meta` (its state fields included) and `body`.
/// Routes are short names (config-validated); a longer one is cut for the prefix only.
pub(crate) fn append(buf: &mut Vec<u8>, meta: &Meta, meta_json: &[u8], body: &[u8]) -> (usize, AppendLayout) {
    let route = &meta.route.as_bytes()[..meta.route.len().min(u16::MAX as usize)];
    let at = frame(buf, KIND_APPEND, |b| {
        b.extend_from_slice(&meta.seq.to_le_bytes());
        b.extend_from_slice(&meta.received_at_ms.to_le_bytes());
        b.extend_from_slice(&meta.updated_at_ms.to_le_bytes());
        b.extend_from_slice(&meta.next_attempt_at_ms.to_le_bytes());
        b.extend_from_slice(&meta.attempts.to_le_bytes());
        b.push(meta.state.code());
        b.extend_from_slice(&(route.len() as u16).to_le_bytes());
        b.extend_from_slice(&(meta_json.len() as u32).to_le_bytes());
        b.extend_from_slice(route);
        b.extend_from_slice(meta_json);
        b.extend_from_slice(body);
    });
    let meta_at = (HEADER_LEN + APPEND_FIXED + route.len()) as u32;
    let layout = AppendLayout {
        meta_at,
        meta_len: meta_json.len() as u32,
        body_at: meta_at + meta_json.len() as u32,
        body_len: body.len() as u32,
    };
    (at, layout)
}

/// The binary prefix of an append record.
pub(crate) struct AppendHead<'a> {
    pub seq: Seq,
    pub received_at_ms: u64,
    pub updated_at_ms: u64,
    pub next_attempt_at_ms: u64,
    pub attempts: u32,
    pub state: State,
    pub route: &'a str,
    pub layout: AppendLayout,
}

pub(crate) fn parse_append(p: &[u8]) -> Option<AppendHead<'_>> {
    parse_append_prefix(p, p.len())
}

/// Bytes of an append payload before its meta JSON (what a segment summary keeps of it).
pub(crate) fn append_prefix_len(p: &[u8]) -> Option<usize> {
    let route_len = usize::from(u16::from_le_bytes(p.get(37..39)?.try_into().ok()?));
    Some(APPEND_FIXED + route_len).filter(|&n| n <= p.len())
}

/// Parses an append from its prefix (`p`, at least up to the route) and its payload's full
/// length `payload_len` (from the record, or as a segment summary remembers it).
pub(crate) fn parse_append_prefix(p: &[u8], payload_len: usize) -> Option<AppendHead<'_>> {
    if p.len() < APPEND_FIXED {
        return None;
    }
    let route_len = usize::from(u16::from_le_bytes(p[37..39].try_into().ok()?));
    let meta_len = u32::from_le_bytes(p[39..43].try_into().ok()?);
    let route = std::str::from_utf8(p.get(APPEND_FIXED..APPEND_FIXED + route_len)?).ok()?;
    let body_len = payload_len
        .checked_sub(APPEND_FIXED + route_len)?
        .checked_sub(meta_len as usize)?;
    let body_len = u32::try_from(body_len).ok()?;
    let meta_at = (HEADER_LEN + APPEND_FIXED + route_len) as u32;
    Some(AppendHead {
        route,
        seq: le64(&p[0..8]),
        received_at_ms: le64(&p[8..16]),
        updated_at_ms: le64(&p[16..24]),
        next_attempt_at_ms: le64(&p[24..32]),
        attempts: u32::from_le_bytes(p[32..36].try_into().ok()?),
        state: State::from_code(p[36])?,
        layout: AppendLayout {
            meta_at,
            meta_len,
            body_at: meta_at + meta_len,
            body_len,
        },
    })
}

/// A state change as logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StateRec {
    pub seq: Seq,
    pub state: State,
    pub attempts: u32,
    pub next_attempt_at_ms: u64,
    pub updated_at_ms: u64,
    pub last_error: Option<String>,
}

pub(crate) fn state(buf: &mut Vec<u8>, r: &StateRec) -> usize {
    frame(buf, KIND_STATE, |b| {
        b.extend_from_slice(&r.seq.to_le_bytes());
        b.push(r.state.code());
        b.extend_from_slice(&r.attempts.to_le_bytes());
        b.extend_from_slice(&r.next_attempt_at_ms.to_le_bytes());
        b.extend_from_slice(&r.updated_at_ms.to_le_bytes());
        match &r.last_error {
            None => b.push(0),
            Some(e) => {
                b.push(1);
                b.extend_from_slice(e.as_bytes());
            }
        }
    })
}

pub(crate) fn parse_state(p: &[u8]) -> Option<StateRec> {
    if p.len() < 30 {
        return None;
    }
    let last_error = match p[29] {
        0 => None,
        _ => Some(String::from_utf8_lossy(&p[30..]).into_owned()),
    };
    Some(StateRec {
        seq: le64(&p[0..8]),
        state: State::from_code(p[8])?,
        attempts: u32::from_le_bytes(p[9..13].try_into().ok()?),
        next_attempt_at_ms: le64(&p[13..21]),
        updated_at_ms: le64(&p[21..29]),
        last_error,
    })
}

pub(crate) fn remove(buf: &mut Vec<u8>, seq: Seq) -> usize {
    frame(buf, KIND_REMOVE, |b| b.extend_from_slice(&seq.to_le_bytes()))
}

pub(crate) fn probe(buf: &mut Vec<u8>, now: u64) -> usize {
    frame(buf, KIND_PROBE, |b| b.extend_from_slice(&now.to_le_bytes()))
}

pub(crate) fn parse_seq(p: &[u8]) -> Option<Seq> {
    (p.len() >= 8).then(|| le64(&p[..8]))
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}
