//! Reads. Each runs in one read transaction (a consistent snapshot) and never blocks the writer.
//! Listings walk index rows only and decode `meta` for the returned page alone.

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable};

use super::error::StorageError;
use super::model::{ListQuery, Meta, Page, SeenId, Seq, State, Stats};
use super::schema::{decode_meta, BODY, BY_ROUTE, BY_STATE, COUNTERS, IDS, META};

pub(crate) fn meta(txn: &ReadTransaction, seq: Seq) -> Result<Option<Meta>, StorageError> {
    let table = txn.open_table(META)?;
    let raw = table.get(seq)?;
    raw.map(|raw| decode_meta(seq, raw.value())).transpose()
}

pub(crate) fn body(txn: &ReadTransaction, seq: Seq) -> Result<Option<bytes::Bytes>, StorageError> {
    let table = txn.open_table(BODY)?;
    let raw = table.get(seq)?;
    Ok(raw.map(|raw| bytes::Bytes::copy_from_slice(raw.value())))
}

pub(crate) fn pending(
    txn: &ReadTransaction,
    route: &str,
    after: Option<Seq>,
    limit: usize,
) -> Result<Vec<Meta>, StorageError> {
    let Some(from) = after.map_or(Some(0), |s| s.checked_add(1)) else {
        return Ok(Vec::new());
    };
    let index = txn.open_table(BY_ROUTE)?;
    let code = State::Pending.code();
    let mut seqs = Vec::new();
    for row in index.range((route, code, from)..=(route, code, Seq::MAX))?.take(limit) {
        seqs.push(row?.0.value().2);
    }
    metas(txn, &seqs)
}

/// Every id accepted since `since_ms`, with its fingerprint (read from its record's meta; the
/// last record read is kept, since a delivery's ids are mostly adjacent in the index).
pub(crate) fn ids_since(txn: &ReadTransaction, since_ms: u64) -> Result<Vec<SeenId>, StorageError> {
    let table = txn.open_table(IDS)?;
    let metas = txn.open_table(META)?;
    let mut last: Option<Meta> = None;
    let mut out = Vec::new();
    for row in table.range((since_ms, "", "", 0)..)? {
        let (key, _) = row?;
        let (received_at_ms, route, id, seq) = key.value();
        if last.as_ref().is_none_or(|m| m.seq != seq) {
            last = match metas.get(seq)? {
                Some(raw) => Some(decode_meta(seq, raw.value())?),
                None => None,
            };
        }
        let fingerprint = last
            .as_ref()
            .and_then(|m| {
                let i = m.event_ids.iter().position(|e| e == id)?;
                m.fingerprints.get(i).copied()
            })
            .unwrap_or(0);
        out.push(SeenId {
            route: route.to_owned(),
            id: id.to_owned(),
            fingerprint,
            received_at_ms,
        });
    }
    Ok(out)
}

pub(crate) fn stats(txn: &ReadTransaction) -> Result<Stats, StorageError> {
    let counters = txn.open_table(COUNTERS)?;
    let mut stats = Stats::default();
    for row in counters.iter()? {
        let (key, count) = row?;
        let (route, code) = key.value();
        let state = State::from_code(code)
            .ok_or_else(|| StorageError::Corrupt(format!("counter of route {route}: state code {code}")))?;
        *stats.routes.entry(route.to_owned()).or_default().slot(state) = count.value();
    }
    let index = txn.open_table(BY_ROUTE)?;
    let code = State::Pending.code();
    for (route, rs) in stats.routes.iter_mut().filter(|(_, rs)| rs.pending > 0) {
        // Seq order is acceptance order, so the first pending row is the oldest one.
        let first = index
            .range((route.as_str(), code, 0)..=(route.as_str(), code, Seq::MAX))?
            .next();
        rs.oldest_pending_received_at_ms = first.transpose()?.map(|(_, received)| received.value());
    }
    Ok(stats)
}

pub(crate) fn list(txn: &ReadTransaction, q: &ListQuery) -> Result<Page, StorageError> {
    let timed = q.start_ms.is_some() || q.end_ms.is_some();
    let in_range =
        |received: u64| q.start_ms.is_none_or(|start| received >= start) && q.end_ms.is_none_or(|end| received < end);
    // Without a time filter the total comes from the counters and the walk stops at the page end;
    // with one, the matching index rows must be counted.
    let counted_total = if timed {
        None
    } else {
        Some(total_from_counters(txn, q)?)
    };

    let mut matched = 0u64;
    let mut seqs = Vec::new();
    if counted_total.is_none() || q.limit > 0 {
        for row in candidates(txn, q)? {
            let (seq, received) = row?;
            if !in_range(received) {
                continue;
            }
            if matched >= q.offset && (seqs.len() as u64) < q.limit {
                seqs.push(seq);
            }
            matched += 1;
            if counted_total.is_some() && seqs.len() as u64 >= q.limit {
                break;
            }
        }
    }
    let items = metas(txn, &seqs)?;
    Ok(Page {
        count: items.len() as u64,
        offset: q.offset,
        limit: q.limit,
        total: counted_total.unwrap_or(matched),
        items,
    })
}

fn metas(txn: &ReadTransaction, seqs: &[Seq]) -> Result<Vec<Meta>, StorageError> {
    let table = txn.open_table(META)?;
    let mut out = Vec::with_capacity(seqs.len());
    for &seq in seqs {
        let raw = table
            .get(seq)?
            .ok_or_else(|| StorageError::corrupt_record(seq, "indexed but missing"))?;
        out.push(decode_meta(seq, raw.value())?);
    }
    Ok(out)
}

fn total_from_counters(txn: &ReadTransaction, q: &ListQuery) -> Result<u64, StorageError> {
    let counters = txn.open_table(COUNTERS)?;
    let mut total = 0u64;
    match (&q.route, q.state) {
        (Some(route), state) => {
            for s in state.map_or(State::ALL.to_vec(), |s| vec![s]) {
                total += counters.get((route.as_str(), s.code()))?.map_or(0, |c| c.value());
            }
        }
        (None, state) => {
            for row in counters.iter()? {
                let (key, count) = row?;
                if state.is_none_or(|s| s.code() == key.value().1) {
                    total += count.value();
                }
            }
        }
    }
    Ok(total)
}

/// (seq, received_at_ms) of every event matching the route/state filters, in seq order.
type Rows = Box<dyn Iterator<Item = Result<(Seq, u64), StorageError>>>;

fn candidates(txn: &ReadTransaction, q: &ListQuery) -> Result<Merge, StorageError> {
    let states = q.state.map_or(State::ALL.to_vec(), |s| vec![s]);
    let mut rows: Vec<Rows> = Vec::new();
    match &q.route {
        Some(route) => {
            let index: ReadOnlyTable<(&str, u8, Seq), u64> = txn.open_table(BY_ROUTE)?;
            for s in states {
                let c = s.code();
                let range = index.range((route.as_str(), c, 0)..=(route.as_str(), c, Seq::MAX))?;
                rows.push(Box::new(range.map(|row| {
                    let (k, v) = row?;
                    Ok((k.value().2, v.value()))
                })));
            }
        }
        None => {
            let index: ReadOnlyTable<(u8, Seq), u64> = txn.open_table(BY_STATE)?;
            for s in states {
                let c = s.code();
                let range = index.range((c, 0)..=(c, Seq::MAX))?;
                rows.push(Box::new(range.map(|row| {
                    let (k, v) = row?;
                    Ok((k.value().1, v.value()))
                })));
            }
        }
    }
    Merge::new(rows)
}

/// Merges up to four seq-ordered index ranges (one per state) into one seq-ordered stream.
struct Merge {
    heads: Vec<Option<(Seq, u64)>>,
    rows: Vec<Rows>,
}

impl Merge {
    fn new(mut rows: Vec<Rows>) -> Result<Self, StorageError> {
        let heads = rows
            .iter_mut()
            .map(|r| r.next().transpose())
            .collect::<Result<_, _>>()?;
        Ok(Merge { heads, rows })
    }
}

impl Iterator for Merge {
    type Item = Result<(Seq, u64), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (i, _) = self
            .heads
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.map(|(seq, _)| (i, seq)))
            .min_by_key(|&(_, seq)| seq)?;
        let item = self.heads[i].take();
        match self.rows[i].next().transpose() {
            Ok(next) => self.heads[i] = next,
            Err(e) => return Some(Err(e)),
        }
        item.map(Ok)
    }
}
