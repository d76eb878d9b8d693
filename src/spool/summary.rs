//! Segment summaries: what start-up needs of a sealed segment, without its JSON and bodies, so
//! opening a big store replays ~80 bytes per event instead of reading and CRC-checking ~3 KB
//! (1M events: open + `ids_since` 7.9–8.1 s → 1.1–1.4 s, BENCHMARKS.md "Start-up and memory").
//! Also where `ids_since` finds the event ids and fingerprints the duplicate memory is rebuilt
//! from, without a `pread` and a JSON parse per event.
//!
//! `seg-00000007.sum` summarises `seg-00000007.log` once the writer has moved on to the next
//! segment (a sealed segment is never written again). It holds, in log order, one entry per
//! record: headers, state and remove records whole; of an append its binary prefix (seq, times,
//! state, route) plus its event ids and fingerprints. Replaying the entries gives the same index
//! as replaying the records. Layout: `MAGIC, seg u32, covers u64, entries…, crc32` where each
//! entry is `kind u8, at u64, payload_len u32, stored_len u32, stored`, `covers` is the
//! segment's written length and the CRC covers everything before it.
//!
//! A summary is only an accelerator: written tmp + fsync + rename, and ignored (the segment is
//! then read and checked in full, as before summaries existed) when it is missing, damaged, for
//! another segment, or the segment holds anything after `covers`. The last segment is always
//! read in full, so a torn or damaged tail is still found and reported at start-up.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::format::{self, Found};
use super::index::SegNo;

const MAGIC: &[u8; 8] = b"PGSUM001";
const HEAD: usize = 8 + 4 + 8;
const ENTRY_HEAD: usize = 1 + 8 + 4 + 4;
/// Id count meaning "this append's meta could not be parsed": `ids_since` reads the record.
const IDS_UNKNOWN: u32 = u32::MAX;

pub(crate) fn path(dir: &Path, no: SegNo) -> PathBuf {
    dir.join(format!("seg-{no:08}.sum"))
}

pub(crate) fn parse_name(name: &str) -> Option<SegNo> {
    name.strip_prefix("seg-")?.strip_suffix(".sum")?.parse().ok()
}

/// The summary of the active segment, grown as records are written to it.
#[derive(Default)]
pub(crate) struct Builder {
    buf: Vec<u8>,
}

/// Just the parts of [`super::Meta`] the duplicate memory needs.
#[derive(Deserialize)]
struct Ids {
    event_ids: Vec<String>,
    #[serde(default)]
    fingerprints: Vec<u64>,
}

impl Builder {
    /// Adds every whole record in `data`, which was written at segment offset `base`.
    pub(crate) fn records(&mut self, data: &[u8], base: u64) {
        let mut at = 0;
        while let Found::Record { kind, payload, next } = format::read(data, at) {
            self.record(base + at as u64, kind, payload);
            at = next;
        }
    }

    /// Adds one record found at segment offset `at`.
    pub(crate) fn record(&mut self, at: u64, kind: u8, payload: &[u8]) {
        let stored_at = self.buf.len() + ENTRY_HEAD;
        match kind {
            format::KIND_APPEND => {
                let Some(head) = format::parse_append(payload) else {
                    return; // the replay ignores it too
                };
                let prefix = head.layout.meta_at as usize - format::HEADER_LEN;
                let meta_end = prefix + head.layout.meta_len as usize;
                self.entry_head(kind, at, payload.len());
                self.buf.extend_from_slice(&payload[..prefix]);
                match payload
                    .get(prefix..meta_end)
                    .and_then(|m| serde_json::from_slice::<Ids>(m).ok())
                {
                    Some(ids) => {
                        self.buf.extend_from_slice(&(ids.event_ids.len() as u32).to_le_bytes());
                        for (i, id) in ids.event_ids.iter().enumerate() {
                            self.buf.extend_from_slice(&(id.len() as u32).to_le_bytes());
                            self.buf.extend_from_slice(id.as_bytes());
                            let fp = ids.fingerprints.get(i).copied().unwrap_or(0);
                            self.buf.extend_from_slice(&fp.to_le_bytes());
                        }
                    }
                    None => self.buf.extend_from_slice(&IDS_UNKNOWN.to_le_bytes()),
                }
            }
            format::KIND_HEADER | format::KIND_STATE | format::KIND_REMOVE => {
                self.entry_head(kind, at, payload.len());
                self.buf.extend_from_slice(payload);
            }
            _ => return, // probes change nothing
        }
        let stored = (self.buf.len() - stored_at) as u32;
        self.buf[stored_at - 4..stored_at].copy_from_slice(&stored.to_le_bytes());
    }

    fn entry_head(&mut self, kind: u8, at: u64, payload_len: usize) {
        self.buf.push(kind);
        self.buf.extend_from_slice(&at.to_le_bytes());
        self.buf.extend_from_slice(&(payload_len as u32).to_le_bytes());
        self.buf.extend_from_slice(&[0u8; 4]); // stored length, filled in by `record`
    }

    /// Writes the summary of segment `no`, whose written length is `covers`, durably under its
    /// final name. The caller makes the rename durable (creating the next segment syncs the
    /// directory); until then a crash only costs a full read of that segment.
    pub(crate) fn write(&self, dir: &Path, no: SegNo, covers: u64) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(HEAD + self.buf.len() + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&no.to_le_bytes());
        out.extend_from_slice(&covers.to_le_bytes());
        out.extend_from_slice(&self.buf);
        out.extend_from_slice(&crc32fast::hash(&out).to_le_bytes());
        let tmp = dir.join(format!("seg-{no:08}.sum.tmp"));
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&out)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path(dir, no))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// A summary read back and checked.
pub(crate) struct Summary {
    data: Vec<u8>,
    pub covers: u64,
}

/// One summary entry; for an append, `stored` is the payload's prefix followed by the ids.
pub(crate) struct Entry<'a> {
    pub kind: u8,
    pub at: u64,
    pub payload_len: usize,
    pub stored: &'a [u8],
}

/// An event id as a summary holds it.
pub(crate) struct SummaryId<'a> {
    pub id: &'a str,
    pub fingerprint: u64,
}

impl Summary {
    /// Reads segment `no`'s summary; `None` if there is none or it fails any check.
    pub(crate) fn load(dir: &Path, no: SegNo) -> Option<Summary> {
        let data = std::fs::read(path(dir, no)).ok()?;
        let body = data.len().checked_sub(4)?;
        if body < HEAD || &data[..8] != MAGIC {
            return None;
        }
        let crc = u32::from_le_bytes(data[body..].try_into().ok()?);
        if crc32fast::hash(&data[..body]) != crc || u32::from_le_bytes(data[8..12].try_into().ok()?) != no {
            return None;
        }
        let covers = u64::from_le_bytes(data[12..20].try_into().ok()?);
        let summary = Summary { data, covers };
        // Every entry must frame exactly, so a replay never stops half way through.
        let mut n = 0;
        let mut at = HEAD;
        while at < body {
            let stored = summary.entry_at(at)?.stored.len();
            at += ENTRY_HEAD + stored;
            n += 1;
        }
        (at == body && n > 0).then_some(summary)
    }

    fn entry_at(&self, at: usize) -> Option<Entry<'_>> {
        let end = self.data.len() - 4;
        let head = self.data.get(at..at + ENTRY_HEAD)?;
        let stored_len = u32::from_le_bytes(head[13..17].try_into().ok()?) as usize;
        let stored = self
            .data
            .get(at + ENTRY_HEAD..(at + ENTRY_HEAD).checked_add(stored_len)?)?;
        if at + ENTRY_HEAD + stored_len > end {
            return None;
        }
        Some(Entry {
            kind: head[0],
            at: u64::from_le_bytes(head[1..9].try_into().ok()?),
            payload_len: u32::from_le_bytes(head[9..13].try_into().ok()?) as usize,
            stored,
        })
    }

    /// The entries in log order (framing was checked by `load`).
    pub(crate) fn entries(&self) -> impl Iterator<Item = Entry<'_>> {
        let mut at = HEAD;
        std::iter::from_fn(move || {
            let e = self.entry_at(at)?;
            at += ENTRY_HEAD + e.stored.len();
            Some(e)
        })
    }

    /// Whether segment file `file` holds nothing after `covers` (a summary of an older state of
    /// a segment that was written to since must not be used).
    pub(crate) fn matches(&self, file: &File) -> bool {
        let mut next = [0u8; format::HEADER_LEN];
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if self.covers > len {
            return false;
        }
        let n = (len - self.covers).min(next.len() as u64) as usize;
        file.read_exact_at(&mut next[..n], self.covers).is_ok() && next.iter().all(|&b| b == 0)
    }
}

/// The ids of an append entry (`stored` past its prefix); `None`: unknown, read the record.
pub(crate) fn ids(stored: &[u8]) -> Option<Vec<SummaryId<'_>>> {
    let prefix = format::append_prefix_len(stored)?;
    let rest = &stored[prefix..];
    let n = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
    if n == IDS_UNKNOWN {
        return None;
    }
    let mut out = Vec::with_capacity(n.min(1024) as usize);
    let mut at = 4;
    for _ in 0..n {
        let len = u32::from_le_bytes(rest.get(at..at + 4)?.try_into().ok()?) as usize;
        let id = std::str::from_utf8(rest.get(at + 4..at + 4 + len)?).ok()?;
        let fp = u64::from_le_bytes(rest.get(at + 4 + len..at + 12 + len)?.try_into().ok()?);
        out.push(SummaryId { id, fingerprint: fp });
        at += 12 + len;
    }
    Some(out)
}
