//! The borrowed walk over a JSON body or event: one streaming pass that finds the members on
//! the configured pointer paths, refuses a path member written twice, and writes the canonical
//! JSON that content hashes are taken over — without building a `serde_json::Value`.
//!
//! Why by hand over serde's `Deserializer` rather than `Value` + `Value::pointer`: the body is
//! forwarded as bytes, so a tree of the whole body was only ever read at two or three paths.
//! Measured (callgrind, release, examples/samples/xbs-status-change.json, 1,367 bytes): finding
//! the ids this way takes ~18k instructions and 4 allocations, against ~61k and 100 for the
//! `Value`; with the canonical JSON and its SHA-256 for the fingerprint, 112k and 29.
//! docs/profiles.md, "What extraction costs", has the table and the method.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Compiled RFC 6901 pointers: a trie of member names (and array indexes).
#[derive(Clone, Debug, Default)]
pub(crate) struct Paths {
    root: Node,
    /// The pointers as configured, by slot, for error messages.
    names: Vec<String>,
    /// A `*` token stands for every element of an array (the stale guard's pointers; in
    /// RFC 6901 and in the id pointers it is only a member named `*`).
    wildcards: bool,
}

#[derive(Clone, Debug, Default)]
pub(super) struct Node {
    /// A pointer ends here: the value found goes to this slot.
    slot: Option<usize>,
    children: Vec<Child>,
}

#[derive(Clone, Debug)]
struct Child {
    token: String,
    /// The token as an array index, when it is one (`0`, `17`; not `01`).
    index: Option<usize>,
    node: Node,
}

impl Paths {
    /// One slot per pointer, in the order given. Pointers are checked for their leading `/`
    /// where the config is loaded.
    pub(super) fn new<'a>(pointers: impl IntoIterator<Item = &'a str>) -> Paths {
        let mut paths = Paths::default();
        for (slot, pointer) in pointers.into_iter().enumerate() {
            let mut node = &mut paths.root;
            if !pointer.is_empty() {
                for token in pointer.split('/').skip(1) {
                    let token = token.replace("~1", "/").replace("~0", "~");
                    let at = match node.children.iter().position(|c| c.token == token) {
                        Some(at) => at,
                        None => {
                            let index = token.parse::<usize>().ok().filter(|i| i.to_string() == token);
                            node.children.push(Child {
                                token,
                                index,
                                node: Node::default(),
                            });
                            node.children.len() - 1
                        }
                    };
                    node = &mut node.children[at].node;
                }
            }
            // The first of two equal pointers keeps the slot; the second never fills.
            node.slot.get_or_insert(slot);
            paths.names.push(pointer.to_string());
        }
        paths
    }

    /// Top-level member names (`hash_exclude`) as pointers.
    /// [`Paths::new`] where `*` matches every element of an array.
    pub(crate) fn with_wildcards<'a>(pointers: impl IntoIterator<Item = &'a str>) -> Paths {
        Paths {
            wildcards: true,
            ..Paths::new(pointers)
        }
    }

    pub(super) fn top_level(names: &[String]) -> Paths {
        let pointers: Vec<String> = names
            .iter()
            .map(|n| format!("/{}", n.replace('~', "~0").replace('/', "~1")))
            .collect();
        Paths::new(pointers.iter().map(String::as_str))
    }

    pub(super) fn slots(&self) -> usize {
        self.names.len()
    }

    fn name(&self, slot: usize) -> &str {
        self.names.get(slot).map(String::as_str).unwrap_or("")
    }

    /// The first configured pointer that passes through `node` (names a duplicate member).
    pub(super) fn name_below(&self, node: &Node) -> &str {
        self.name(first_slot(Some(node)))
    }

    pub(super) fn root(&self) -> &Node {
        &self.root
    }
}

impl Node {
    /// The member (or element) `token` below this one, and its position among the children.
    pub(super) fn child(&self, token: &str) -> Option<(usize, &Node)> {
        self.children
            .iter()
            .enumerate()
            .find(|(_, c)| c.token == token)
            .map(|(i, c)| (i, &c.node))
    }

    pub(super) fn slot(&self) -> Option<usize> {
        self.slot
    }
}

/// A scalar found at a pointer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Found<'de> {
    Str(Cow<'de, str>),
    /// A number, as its canonical text (what `serde_json::Number` displays).
    Num(String),
    /// An object, array, boolean or null: never an id.
    Other,
}

impl Found<'_> {
    /// A non-empty string or a number, as the id and ordering-key rules read it.
    pub(super) fn text(&self) -> Option<&str> {
        match self {
            Found::Str(s) if !s.is_empty() => Some(s),
            Found::Num(n) => Some(n),
            _ => None,
        }
    }
}

/// Why a walk stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WalkError {
    /// Not JSON: serde_json's category and position, never the body's text.
    Syntax(String),
    /// A member on a configured path appears twice in one object (after unescaping): the
    /// configured pointer that reached it.
    Duplicate(String),
    /// A member name appears twice in one object of a value whose canonical JSON was taken:
    /// its content, and so its identity, reads differently to parsers keeping the first.
    Repeated,
    /// The pointer meant to hold the batch leads to no array.
    NoArray,
}

/// What one walk found.
pub(super) struct Walked<'de> {
    /// Per slot of the `find` paths, the value at that pointer.
    pub found: Vec<Option<Found<'de>>>,
}

/// Walks `text` (one JSON value, nothing after it but white space): fills the slots of `find`,
/// and, with `canonical`, appends the value's canonical JSON to it with the members at `drop`
/// left out.
pub(super) fn walk<'p, 'de>(
    text: &'de str,
    find: &'p Paths,
    drop: Option<&'p Paths>,
    canonical: Option<&mut Vec<u8>>,
) -> Result<Walked<'de>, WalkError> {
    let mut state = State::new(find);
    run(text, &mut state, drop, canonical)?;
    Ok(Walked { found: state.found })
}

/// Every string that `paths` reach in `text`, borrowed where unescaped; the rest of the text is
/// only checked to be JSON. For the stale guard: a `Value` of the whole event cost it 15% of
/// pushgate's CPU under the keep-alive benchmark (bench/profile.sh, 2026-12-02).
pub(crate) fn strings<'de>(text: &'de str, paths: &Paths) -> Result<Vec<Cow<'de, str>>, WalkError> {
    let mut state = State {
        every: Some(Vec::new()),
        ..State::new(paths)
    };
    run(text, &mut state, None, None)?;
    Ok(state.every.unwrap_or_default())
}

/// The elements of the array at `pointer` (`""` = the whole text), each borrowed from `text`.
/// The rest of the text is checked to be JSON, and the members on the pointer's path to be
/// written once.
pub(super) fn elements<'de>(text: &'de str, pointer: &Paths) -> Result<Vec<&'de RawValue>, WalkError> {
    let mut state = State {
        elements_slot: Some(0),
        ..State::new(pointer)
    };
    run(text, &mut state, None, None)?;
    state.elements.ok_or(WalkError::NoArray)
}

fn run<'p, 'de>(
    text: &'de str,
    state: &mut State<'p, 'de>,
    drop: Option<&'p Paths>,
    canonical: Option<&mut Vec<u8>>,
) -> Result<(), WalkError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = Walk {
        find: Some(&state.find.root),
        drop: drop.map(|d| &d.root),
        out: canonical,
        state,
    };
    let result = seed.deserialize(&mut de).and_then(|()| de.end());
    result.map_err(|e| match state.duplicate.take() {
        Some(slot) => WalkError::Duplicate(state.find.name(slot).to_string()),
        None if state.repeated => WalkError::Repeated,
        None if state.elements_slot.is_some() && e.classify() == serde_json::error::Category::Data => {
            WalkError::NoArray
        }
        None => WalkError::Syntax(syntax(&e)),
    })
}

/// serde_json's message reduced to its category and position: it may quote the body.
pub(super) fn syntax(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let kind = match e.classify() {
        Category::Io => "i/o",
        Category::Syntax => "syntax",
        Category::Data => "data",
        Category::Eof => "truncated",
    };
    format!("{kind} error at line {} column {}", e.line(), e.column())
}

/// An object's canonical member values and their keys, while it is being walked.
type Pool<'de> = (Vec<u8>, Vec<(Cow<'de, str>, Range<usize>)>);

struct State<'p, 'de> {
    find: &'p Paths,
    found: Vec<Option<Found<'de>>>,
    /// Set before the walk is stopped for a duplicate member (serde errors carry no type).
    duplicate: Option<usize>,
    /// Set before the walk is stopped for a repeated member name.
    repeated: bool,
    /// Object buffers for reuse (see `visit_map`).
    pool: Vec<Pool<'de>>,
    /// The batch's elements, once the `elements_slot` pointer is reached.
    elements: Option<Vec<&'de RawValue>>,
    elements_slot: Option<usize>,
    /// When set, every string found on a path is kept here, not only the first per slot.
    every: Option<Vec<Cow<'de, str>>>,
}

impl<'p> State<'p, '_> {
    /// A walk that fills the slots of `find` and nothing else.
    fn new(find: &'p Paths) -> Self {
        State {
            find,
            found: (0..find.slots()).map(|_| None).collect(),
            duplicate: None,
            repeated: false,
            pool: Vec::new(),
            elements: None,
            elements_slot: None,
            every: None,
        }
    }
}

/// One value of the walk: where it is in the `find` and `drop` tries, and where its canonical
/// JSON goes (nowhere when `out` is `None`).
struct Walk<'p, 'w, 'de> {
    find: Option<&'p Node>,
    drop: Option<&'p Node>,
    out: Option<&'w mut Vec<u8>>,
    state: &'w mut State<'p, 'de>,
}

impl<'p, 'w, 'de> Walk<'p, 'w, 'de> {
    fn slot(&self) -> Option<usize> {
        self.find.and_then(|n| n.slot)
    }

    fn capture(&mut self, found: impl FnOnce() -> Found<'de>) {
        if let Some(slot) = self.slot() {
            if let Some(place) = self.state.found.get_mut(slot) {
                if place.is_none() {
                    *place = Some(found());
                }
            }
        }
    }

    fn write(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        if let Some(out) = self.out.as_deref_mut() {
            f(out);
        }
    }

    /// `n` is what serde_json::Number displays: written without an allocation.
    fn number(mut self, n: impl fmt::Display) -> Self {
        self.write(|out| {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{n}");
        });
        self.capture(|| Found::Num(n.to_string()));
        self
    }

    fn string(mut self, s: Cow<'de, str>) -> Self {
        self.write(|out| write_cow(out, &s));
        if self.slot().is_some() {
            if let Some(every) = &mut self.state.every {
                every.push(s.clone());
            }
        }
        self.capture(|| Found::Str(s));
        self
    }

    fn other(mut self, literal: &str) -> Self {
        self.write(|out| out.extend_from_slice(literal.as_bytes()));
        self.capture(|| Found::Other);
        self
    }
}

/// A JSON string literal as canonical JSON writes it (serde_json's escaping).
fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(out, s);
}

/// [`write_str`] for a string read from the body. One serde_json lends (`Borrowed`) had no
/// escape in the body, and a JSON string holds no raw control character, so its canonical
/// form is its text between quotes: copied without the escaping scan, which measured as the
/// larger part of writing the canonical JSON.
// The Cow itself is the information: whether serde_json lent the text from the body.
#[allow(clippy::ptr_arg)]
fn write_cow(out: &mut Vec<u8>, s: &Cow<'_, str>) {
    match s {
        Cow::Borrowed(text) => {
            out.push(b'"');
            out.extend_from_slice(text.as_bytes());
            out.push(b'"');
        }
        Cow::Owned(text) => write_str(out, text),
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let is_elements = self.slot().is_some() && self.slot() == self.state.elements_slot;
        if is_elements {
            // The batch: its elements' bytes are what the app receives, so keep them borrowed.
            let raw: &'de RawValue = de::Deserialize::deserialize(d)?;
            let list: Vec<&'de RawValue> = serde_json::from_str(raw.get()).map_err(de::Error::custom)?;
            self.state.elements = Some(list);
            return Ok(());
        }
        if self.find.is_none() && self.out.is_none() {
            // Off every path and not written: only checked to be JSON.
            d.deserialize_ignored_any(IgnoredAny)?;
            return Ok(());
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.other(if v { "true" } else { "false" });
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.other("null");
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.number(v);
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.number(v);
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // The text serde_json::Number displays: the shortest that reads back as `v`.
        let n = serde_json::Number::from_f64(v).ok_or_else(|| E::custom("non-finite number"))?;
        self.number(n);
        Ok(())
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.string(Cow::Borrowed(v));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.string(Cow::Owned(v.to_owned()));
        Ok(())
    }

    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.string(Cow::Owned(v));
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.capture(|| Found::Other);
        let (find, drop) = (self.find, self.drop);
        let Walk { out, state, .. } = self;
        let mut out = out;
        if let Some(o) = out.as_deref_mut() {
            o.push(b'[');
        }
        let wildcards = state.find.wildcards;
        let mut index = 0usize;
        loop {
            let find_child = find.and_then(|n| {
                n.children
                    .iter()
                    .find(|c| c.index == Some(index) || (wildcards && c.token == "*"))
                    .map(|c| &c.node)
            });
            let drop_child = drop.and_then(|n| n.children.iter().find(|c| c.index == Some(index)).map(|c| &c.node));
            if let Some(o) = out.as_deref_mut() {
                if index > 0 {
                    o.push(b',');
                }
            }
            let o_len = out.as_deref().map(Vec::len);
            let seed = Walk {
                find: find_child,
                drop: drop_child,
                out: out.as_deref_mut(),
                state: &mut *state,
            };
            if seq.next_element_seed(seed)?.is_none() {
                // Undo the comma written for an element that was not there.
                if let (Some(o), Some(len)) = (out.as_deref_mut(), o_len) {
                    o.truncate(if index > 0 { len - 1 } else { len });
                }
                break;
            }
            index += 1;
        }
        if let Some(o) = out {
            o.push(b']');
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.capture(|| Found::Other);
        let (find, drop) = (self.find, self.drop);
        let Walk { out, state, .. } = self;
        // Members' canonical values, written one after the other, then sorted by key. The
        // buffers come from the walk's pool: one pair per nesting depth, not per object.
        let (mut scratch, mut members) = state.pool.pop().unwrap_or_default();
        // Which of this node's children were met, to refuse a second one.
        let mut met: Vec<usize> = Vec::new();
        while let Some(key) = map.next_key_seed(Key)? {
            let on_path = find.and_then(|n| n.children.iter().position(|c| c.token == *key));
            if let Some(at) = on_path {
                if met.contains(&at) {
                    state.duplicate = Some(first_slot(find.map(|n| &n.children[at].node)));
                    return Err(de::Error::custom("duplicate member"));
                }
                met.push(at);
            }
            let find_child = on_path.and_then(|at| find.map(|n| &n.children[at].node));
            let drop_child = drop
                .and_then(|n| n.children.iter().find(|c| c.token == *key))
                .map(|c| &c.node);
            // A member named by a `drop` pointer is left out of the canonical JSON.
            let dropped = drop_child.is_some_and(|n| n.slot.is_some());
            let writes = out.is_some() && !dropped;
            let start = scratch.len();
            map.next_value_seed(Walk {
                find: find_child,
                drop: drop_child,
                out: if writes { Some(&mut scratch) } else { None },
                state: &mut *state,
            })?;
            if writes {
                members.push((key, start..scratch.len()));
            }
        }
        if let Some(out) = out {
            // Sorted by the keys' bytes. A key written twice has no one canonical value.
            members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            if members.windows(2).any(|w| w[0].0 == w[1].0) {
                state.repeated = true;
                return Err(de::Error::custom("repeated member"));
            }
            out.push(b'{');
            for (i, (key, range)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_cow(out, key);
                out.push(b':');
                out.extend_from_slice(&scratch[range.clone()]);
            }
            out.push(b'}');
        }
        scratch.clear();
        members.clear();
        state.pool.push((scratch, members));
        Ok(())
    }
}

/// The slot of the first pointer that passes through `node` (for naming a duplicate).
fn first_slot(node: Option<&Node>) -> usize {
    fn min(node: &Node) -> usize {
        let below = node.children.iter().map(|c| min(&c.node)).min().unwrap_or(usize::MAX);
        node.slot.map_or(below, |s| s.min(below))
    }
    node.map_or(0, min)
}

/// A member name, unescaped; borrowed from the body when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}
