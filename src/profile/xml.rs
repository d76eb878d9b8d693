//! Cross-Border XML bodies (Mastercard publishes XML forms of its pushes): finds the elements on
//! the configured pointer paths with quick-xml's pull reader, without building a tree, and
//! refuses what could make two parsers read one body differently or make a parser expand
//! entities: a DOCTYPE, an entity reference other than the five predefined ones or a character
//! reference, a path element written twice, a declared encoding other than UTF-8.
//!
//! The root element plays the part of JSON's top-level object: the pointer `/eventRef` names
//! the root's child element `<eventRef>` (matched by local name, any namespace prefix). An
//! element's text, with XML white space trimmed, is its value; an element holding other
//! elements is never an id. Mastercard's published carded-rate XML sample is two `<rates>`
//! elements with no root around them, so several top-level elements are read as one body:
//! the pointer applies to each of them, and a path element in two of them is ambiguous.

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;
use quick_xml::{Reader, XmlVersion};

use super::json::{Node, Paths};

/// Why an XML body was refused. Never quotes the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("body is not well-formed XML ({0})")]
    Malformed(String),
    #[error("XML DOCTYPE declarations are refused")]
    Doctype,
    #[error("XML entity references other than &lt; &gt; &amp; &apos; &quot; and character references are refused")]
    Entity,
    #[error("XML declares an encoding other than UTF-8")]
    Encoding,
}

/// The value of each slot of `find` (one per pointer) in the XML document `text`.
pub(super) fn walk(text: &str, find: &Paths) -> Result<Vec<Option<String>>, WalkXmlError> {
    let mut found: Vec<Option<String>> = vec![None; find.slots()];
    let mut reader = Reader::from_str(text);
    // Open elements: where each is in the trie, which of its path children were met, and
    // the text being collected when it is a pointer's target.
    let mut open: Vec<Open<'_>> = Vec::new();
    let mut roots = 0usize;
    // The path children met under any top-level element: shared, so that an id in two
    // top-level elements is a repeat like an id twice in one.
    let mut top_met: Vec<usize> = Vec::new();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| WalkXmlError::Xml(XmlError::Malformed(kind(&e))))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                for attr in e.attributes() {
                    let attr = attr.map_err(|_| WalkXmlError::Xml(XmlError::Malformed("attribute".into())))?;
                    // Resolves only the predefined entities and character references.
                    attr.normalized_value(XmlVersion::Implicit1_0)
                        .map_err(|_| WalkXmlError::Xml(XmlError::Entity))?;
                }
                let top = open.is_empty();
                let node = match open.last_mut() {
                    None => {
                        roots += 1;
                        Some(find.root())
                    }
                    Some(parent) => {
                        // A child element inside a pointer's target: that value is no id.
                        parent.text = None;
                        let local = e.local_name();
                        match parent.node.and_then(|n| n.child(local.as_ref())) {
                            Some((at, node)) => {
                                if parent.met.contains(&at) {
                                    return Err(WalkXmlError::Duplicate(find.name_below(node).to_string()));
                                }
                                parent.met.push(at);
                                Some(node)
                            }
                            None => None,
                        }
                    }
                };
                let element = Open {
                    node,
                    met: if top { std::mem::take(&mut top_met) } else { Vec::new() },
                    top,
                    text: node.and_then(Node::slot).map(|_| String::new()),
                };
                if matches!(event, Event::Start(_)) {
                    open.push(element);
                } else {
                    close(element, &mut found, &mut top_met);
                }
            }
            Event::End(_) => {
                if let Some(element) = open.pop() {
                    close(element, &mut found, &mut top_met);
                }
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                match open.last_mut() {
                    Some(o) => {
                        if let Some(text) = &mut o.text {
                            text.push_str(&content);
                        }
                    }
                    None if content.trim_matches(XML_SPACE).is_empty() => {}
                    None => return Err(WalkXmlError::Xml(XmlError::Malformed("text outside the root".into()))),
                }
            }
            Event::CData(c) => {
                let content = c.xml10_content();
                match open.last_mut() {
                    Some(o) => {
                        if let Some(text) = &mut o.text {
                            text.push_str(&content);
                        }
                    }
                    None => return Err(WalkXmlError::Xml(XmlError::Malformed("CDATA outside the root".into()))),
                }
            }
            Event::GeneralRef(r) => {
                let resolved: String = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => return Err(WalkXmlError::Xml(XmlError::Entity)),
                    }
                } else {
                    match resolve_predefined_entity(&r) {
                        Some(s) => s.to_string(),
                        None => return Err(WalkXmlError::Xml(XmlError::Entity)),
                    }
                };
                match open.last_mut() {
                    Some(o) => {
                        if let Some(text) = &mut o.text {
                            text.push_str(&resolved);
                        }
                    }
                    None => return Err(WalkXmlError::Xml(XmlError::Malformed("text outside the root".into()))),
                }
            }
            Event::DocType(_) => return Err(WalkXmlError::Xml(XmlError::Doctype)),
            Event::Decl(d) => {
                if let Some(enc) = d.encoding() {
                    let enc = enc.map_err(|_| WalkXmlError::Xml(XmlError::Malformed("declaration".into())))?;
                    if !enc.eq_ignore_ascii_case("utf-8") && !enc.eq_ignore_ascii_case("utf8") {
                        return Err(WalkXmlError::Xml(XmlError::Encoding));
                    }
                }
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if roots == 0 || !open.is_empty() {
        return Err(WalkXmlError::Xml(XmlError::Malformed("truncated".into())));
    }
    Ok(found)
}

/// Why [`walk`] stopped.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum WalkXmlError {
    Xml(XmlError),
    /// A path element appears twice under one parent: the pointer that reached it.
    Duplicate(String),
}

const XML_SPACE: &[char] = &[' ', '\t', '\r', '\n'];

struct Open<'p> {
    node: Option<&'p Node>,
    met: Vec<usize>,
    /// A top-level element: its `met` goes back to the shared list when it closes.
    top: bool,
    text: Option<String>,
}

fn close(element: Open<'_>, found: &mut [Option<String>], top_met: &mut Vec<usize>) {
    if element.top {
        *top_met = element.met;
    }
    let (Some(slot), Some(text)) = (element.node.and_then(Node::slot), element.text) else {
        return;
    };
    if let Some(place) = found.get_mut(slot) {
        if place.is_none() {
            *place = Some(text.trim_matches(XML_SPACE).to_string());
        }
    }
}

/// quick-xml's error reduced to its kind: its messages may quote the body.
fn kind(e: &quick_xml::Error) -> String {
    use quick_xml::Error;
    match e {
        Error::Syntax(_) => "syntax",
        Error::IllFormed(_) => "ill-formed",
        Error::Encoding(_) => "encoding",
        Error::Escape(_) => "escape",
        Error::InvalidAttr(_) => "attribute",
        Error::Io(_) => "i/o",
        _ => "other",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(pointers: &[&str]) -> Paths {
        Paths::new(pointers.iter().copied())
    }

    fn ids(text: &str, pointers: &[&str]) -> Result<Vec<Option<String>>, WalkXmlError> {
        walk(text, &find(pointers))
    }

    #[test]
    fn finds_root_children_by_local_name_with_refs_resolved() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment --><statusChange a="x &amp; y">
  <requestStatus><eventRef>nested</eventRef></requestStatus>
  <x:eventRef xmlns:x="urn:x"> ref&#x5F;A&amp;B </x:eventRef>
  <order><id><![CDATA[O-1]]></id></order>
</statusChange>"#;
        let got = ids(doc, &["/eventRef", "/event_ref", "/order/id"]).unwrap();
        assert_eq!(got, [Some("ref_A&B".to_string()), None, Some("O-1".to_string())]);
    }

    #[test]
    fn elements_holding_elements_and_empty_ones_are_no_ids() {
        let got = ids(
            "<r><eventRef><a>1</a></eventRef><event_ref/></r>",
            &["/eventRef", "/event_ref"],
        )
        .unwrap();
        assert_eq!(got, [None, Some(String::new())]);
    }

    #[test]
    fn refuses_doctype_entities_duplicates_and_malformed() {
        let refused = [
            (
                r#"<!DOCTYPE r [<!ENTITY e "x">]><r><eventRef>&e;</eventRef></r>"#,
                WalkXmlError::Xml(XmlError::Doctype),
            ),
            ("<r><eventRef>&e;</eventRef></r>", WalkXmlError::Xml(XmlError::Entity)),
            ("<r a='&e;'/>", WalkXmlError::Xml(XmlError::Entity)),
            ("<r>&nbsp;</r>", WalkXmlError::Xml(XmlError::Entity)),
            (
                "<r><eventRef>A</eventRef><eventRef>B</eventRef></r>",
                WalkXmlError::Duplicate("/eventRef".into()),
            ),
            (
                "<r><eventRef>A</eventRef><y:eventRef>B</y:eventRef></r>",
                WalkXmlError::Duplicate("/eventRef".into()),
            ),
            (
                "<r><order><id>1</id></order><order/></r>",
                WalkXmlError::Duplicate("/order/id".into()),
            ),
            (
                "<r><eventRef>A</eventRef></r><r><eventRef>B</eventRef></r>",
                WalkXmlError::Duplicate("/eventRef".into()),
            ),
            (
                r#"<?xml version="1.0" encoding="ISO-8859-1"?><r/>"#,
                WalkXmlError::Xml(XmlError::Encoding),
            ),
        ];
        for (doc, want) in refused {
            assert_eq!(ids(doc, &["/eventRef", "/order/id"]).unwrap_err(), want, "{doc}");
        }
        for doc in ["<r>", "<r></s>", "", "text", "<r/>x", "<r a='1' a='2'/>"] {
            assert!(
                matches!(ids(doc, &["/eventRef"]), Err(WalkXmlError::Xml(XmlError::Malformed(_)))),
                "{doc}"
            );
        }
        // Not on a path: a repeated element is ordinary XML.
        assert!(ids("<r><tiers/><tiers/></r>", &["/eventRef"]).is_ok());
        // Several top-level elements (the published carded-rate sample) are one body.
        let got = ids(
            "<rates><a/></rates>\n<rates><eventRef>E</eventRef></rates>",
            &["/eventRef"],
        )
        .unwrap();
        assert_eq!(got, [Some("E".to_string())]);
    }
}
