//! Who the sender is: the verified leaf certificate → ClientIdentity (canonical RFC 4514 subject DN, SHA-256 pin).

use std::fmt;
use std::hash::{Hash, Hasher};

use sha2::{Digest, Sha256};
use x509_parser::certificate::X509CertificateParser;
use x509_parser::der_parser::asn1_rs::{Any, FromDer, Tag, ToDer};
use x509_parser::nom::Parser as _;
use x509_parser::x509::X509Name;

/// Attribute types we print by name: (OID, RFC 4514 display name, extra accepted spellings).
const ATTRS: &[(&str, &str, &[&str])] = &[
    ("2.5.4.3", "CN", &["commonName"]),
    ("2.5.4.7", "L", &["localityName"]),
    ("2.5.4.8", "ST", &["stateOrProvinceName"]),
    ("2.5.4.10", "O", &["organizationName"]),
    ("2.5.4.11", "OU", &["organizationalUnitName"]),
    ("2.5.4.6", "C", &["countryName"]),
    ("2.5.4.9", "STREET", &["streetAddress"]),
    ("0.9.2342.19200300.100.1.25", "DC", &["domainComponent"]),
    ("0.9.2342.19200300.100.1.1", "UID", &["userId"]),
    ("1.2.840.113549.1.9.1", "emailAddress", &["E"]),
    ("2.5.4.5", "serialNumber", &[]),
    ("2.5.4.12", "title", &[]),
    ("2.5.4.42", "GN", &["givenName"]),
    ("2.5.4.4", "SN", &["surname"]),
    ("2.5.4.43", "initials", &[]),
    ("2.5.4.65", "pseudonym", &[]),
    ("2.5.4.44", "generationQualifier", &[]),
    ("2.5.4.46", "dnQualifier", &[]),
    ("2.5.4.17", "postalCode", &[]),
    ("2.5.4.15", "businessCategory", &[]),
    ("2.5.4.97", "organizationIdentifier", &[]),
];

/// An attribute value: decoded text when it is a character string, otherwise the DER of the value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Value {
    Text(String),
    Der(Vec<u8>),
}

/// (dotted OID, value). Types are keyed by OID so every spelling of a name compares equal.
type Attr = (String, Value);

/// Errors from parsing a configured DN or a certificate. Positions are 0-based character indices.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnError {
    #[error("empty distinguished name")]
    Empty,
    #[error("empty RDN or attribute at position {at}")]
    EmptyRdn { at: usize },
    #[error("missing '=' after attribute type at position {at}")]
    MissingEquals { at: usize },
    #[error("missing attribute type before '=' at position {at}")]
    MissingType { at: usize },
    #[error("unknown attribute type {0:?} (use a name such as CN, OU, O, L, ST, C or a dotted OID)")]
    UnknownAttribute(String),
    #[error("malformed OID attribute type {0:?}")]
    BadOid(String),
    #[error("bad escape at position {at}: '\\' must precede two hex digits (forming UTF-8) or a printable character")]
    BadEscape { at: usize },
    #[error("quoted value at position {at}: quotes are not RFC 4514, escape special characters with '\\' instead")]
    QuotedValue { at: usize },
    #[error("character {ch:?} at position {at} must be escaped with '\\'")]
    UnescapedChar { ch: char, at: usize },
    #[error("bad '#' value at position {at}: expected hex of one DER-encoded value")]
    BadHexValue { at: usize },
    #[error("cannot parse certificate: {0}")]
    BadCertificate(String),
}

/// A subject DN in canonical form: compared structurally, displayed as RFC 4514.
#[derive(Clone, Debug)]
pub struct ClientDn {
    /// RFC 4514 rendering, for logs and error messages.
    display: String,
    /// RDNs in DER order, each sorted (an RDN is a SET); the only thing compared.
    key: Vec<Vec<Attr>>,
}

impl ClientDn {
    /// Parse a DN written in a config file: RFC 4514 ("CN=a,O=b", last DER RDN first)
    /// or OpenSSL's slash form ("/O=b/CN=a", DER order).
    pub fn parse(s: &str) -> Result<ClientDn, DnError> {
        let parser = Parser {
            chars: s.chars().collect(),
            pos: 0,
            sep: ',',
        };
        parser.parse().map(Self::from_rdns)
    }

    /// From a certificate's subject, keeping the certificate's attribute order.
    pub fn from_x509_name(name: &X509Name<'_>) -> ClientDn {
        let rdns = name.iter().map(|rdn| {
            rdn.iter()
                .map(|a| (a.attr_type().to_id_string(), value_from_any(a.attr_value())))
                .collect()
        });
        Self::from_rdns(rdns.collect())
    }

    /// RFC 4514 string: RDNs in reverse DER order.
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// Build from RDNs in DER order; display keeps the written order inside multi-valued RDNs.
    fn from_rdns(rdns: Vec<Vec<Attr>>) -> ClientDn {
        let display = rdns
            .iter()
            .rev()
            .map(|rdn| rdn.iter().map(render_attr).collect::<Vec<_>>().join("+"))
            .collect::<Vec<_>>()
            .join(",");
        let key = rdns
            .into_iter()
            .map(|mut rdn| {
                rdn.sort();
                rdn
            })
            .collect();
        ClientDn { display, key }
    }
}

impl PartialEq for ClientDn {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for ClientDn {}

impl Hash for ClientDn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl fmt::Display for ClientDn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// The verified client certificate, reduced to what the route checks need. Computed once per TLS connection.
#[derive(Clone, Debug)]
pub struct ClientIdentity {
    pub dn: ClientDn,
    pub sha256: [u8; 32],
}

impl ClientIdentity {
    /// Parse the leaf DER (already verified by rustls). Never panics on any input.
    pub fn from_leaf_der(der: &[u8]) -> Result<ClientIdentity, DnError> {
        // Only the subject is needed: don't let an odd extension that rustls accepted fail the parse.
        let (rest, cert) = X509CertificateParser::new()
            .with_deep_parse_extensions(false)
            .parse(der)
            .map_err(|e| DnError::BadCertificate(e.to_string()))?;
        // The pin is over these exact bytes, so they must be exactly one certificate.
        if !rest.is_empty() {
            return Err(DnError::BadCertificate("trailing data after certificate".into()));
        }
        Ok(ClientIdentity {
            dn: ClientDn::from_x509_name(cert.subject()),
            sha256: Sha256::digest(der).into(),
        })
    }

    /// Lower-case hex of the SHA-256 of the DER, as pins are usually written.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// Decode the string types; anything else (or undecodable) is kept as DER so it still compares exactly.
fn value_from_any(any: &Any<'_>) -> Value {
    let data = any.data;
    let text = if any.header.is_constructed() {
        None
    } else {
        match any.tag() {
            Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::NumericString | Tag::VisibleString => {
                std::str::from_utf8(data).ok().map(str::to_owned)
            }
            // T.61 is only unambiguous when it is plain ASCII.
            Tag::T61String if data.is_ascii() => std::str::from_utf8(data).ok().map(str::to_owned),
            Tag::BmpString if data.len().is_multiple_of(2) => {
                let units = data
                    .chunks_exact(2)
                    .filter_map(|c| c.try_into().ok())
                    .map(u16::from_be_bytes);
                char::decode_utf16(units).collect::<Result<String, _>>().ok()
            }
            Tag::UniversalString if data.len().is_multiple_of(4) => data
                .chunks_exact(4)
                .filter_map(|c| c.try_into().ok())
                .map(|c| char::from_u32(u32::from_be_bytes(c)))
                .collect::<Option<String>>(),
            _ => None,
        }
    };
    text.map_or_else(
        || Value::Der(any.to_der_vec().unwrap_or_else(|_| data.to_vec())),
        Value::Text,
    )
}

fn render_attr((oid, value): &Attr) -> String {
    let name = ATTRS
        .iter()
        .find(|(o, _, _)| o == oid)
        .map_or(oid.as_str(), |(_, n, _)| n);
    match value {
        Value::Text(t) => format!("{name}={}", escape_value(t)),
        Value::Der(der) => format!("{name}=#{}", hex::encode(der)),
    }
}

/// RFC 4514 section 2.4 escaping; control characters become \XX so logs stay one clean line.
fn escape_value(v: &str) -> String {
    let last = v.chars().count().saturating_sub(1);
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => out.push('\\'),
            '#' if i == 0 => out.push('\\'),
            ' ' if i == 0 || i == last => out.push('\\'),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// Map a written attribute type to its dotted OID.
fn resolve_type(name: &str) -> Result<String, DnError> {
    let numeric = match name.get(..4) {
        Some(p) if p.eq_ignore_ascii_case("oid.") => name.get(4..).unwrap_or_default(),
        _ => name,
    };
    if numeric.starts_with(|c: char| c.is_ascii_digit()) {
        let arc_ok =
            |a: &str| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()) && (a == "0" || !a.starts_with('0'));
        return if numeric.split('.').count() >= 2 && numeric.split('.').all(arc_ok) {
            Ok(numeric.to_owned())
        } else {
            Err(DnError::BadOid(name.to_owned()))
        };
    }
    ATTRS
        .iter()
        .find(|(_, short, alt)| short.eq_ignore_ascii_case(name) || alt.iter().any(|a| a.eq_ignore_ascii_case(name)))
        .map(|(oid, _, _)| (*oid).to_owned())
        .ok_or_else(|| DnError::UnknownAttribute(name.to_owned()))
}

/// Hand-written parser over chars; `get` keeps every access bounds-checked.
struct Parser {
    chars: Vec<char>,
    pos: usize,
    /// ',' for RFC 4514, '/' for the OpenSSL slash form.
    sep: char,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += usize::from(c.is_some());
        c
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(' ') {
            self.pos += 1;
        }
    }

    /// Returns RDNs in DER order.
    fn parse(mut self) -> Result<Vec<Vec<Attr>>, DnError> {
        self.skip_spaces();
        match self.peek() {
            None => return Err(DnError::Empty),
            Some('/') => {
                self.sep = '/';
                self.pos += 1;
            }
            Some(_) => {}
        }
        let mut rdns = Vec::new();
        loop {
            let mut rdn = Vec::new();
            loop {
                self.skip_spaces();
                let oid = self.attr_type()?;
                self.skip_spaces();
                rdn.push((oid, self.value()?));
                if self.peek() != Some('+') {
                    break;
                }
                self.pos += 1;
            }
            rdns.push(rdn);
            // value() stops only at '+', the separator or the end.
            if self.bump().is_none() {
                break;
            }
        }
        if self.sep == ',' {
            rdns.reverse();
        }
        Ok(rdns)
    }

    fn attr_type(&mut self) -> Result<String, DnError> {
        let start = self.pos;
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if c == '=' || c == '+' || c == self.sep {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        let name = name.trim_end();
        match self.peek() {
            Some('=') if name.is_empty() => Err(DnError::MissingType { at: start }),
            Some('=') => {
                self.pos += 1;
                resolve_type(name)
            }
            _ if name.is_empty() => Err(DnError::EmptyRdn { at: self.pos }),
            _ => Err(DnError::MissingEquals { at: self.pos }),
        }
    }

    /// One value up to an unescaped '+', separator or end; unescaped edge spaces are dropped.
    fn value(&mut self) -> Result<Value, DnError> {
        let start = self.pos;
        match self.peek() {
            Some('"') => return Err(DnError::QuotedValue { at: start }),
            Some('#') => return self.hex_value(),
            _ => {}
        }
        let mut buf = Vec::new();
        let mut keep = 0;
        while let Some(c) = self.peek() {
            if c == '+' || c == self.sep {
                break;
            }
            let at = self.pos;
            self.pos += 1;
            match c {
                '\\' => self.escape(at, &mut buf)?,
                ' ' => {
                    buf.push(b' ');
                    continue;
                }
                '"' | '<' | '>' | ';' => return Err(DnError::UnescapedChar { ch: c, at }),
                c if c.is_control() => return Err(DnError::UnescapedChar { ch: c, at }),
                c => buf.extend_from_slice(c.encode_utf8(&mut [0u8; 4]).as_bytes()),
            }
            keep = buf.len();
        }
        buf.truncate(keep);
        String::from_utf8(buf)
            .map(Value::Text)
            .map_err(|_| DnError::BadEscape { at: start })
    }

    /// After a backslash at `at`: a hex pair (one UTF-8 byte) or any printable character.
    fn escape(&mut self, at: usize, buf: &mut Vec<u8>) -> Result<(), DnError> {
        match self.bump() {
            Some(c) if c.is_ascii_hexdigit() => match (c.to_digit(16), self.bump().and_then(|l| l.to_digit(16))) {
                (Some(hi), Some(lo)) => buf.push(u8::try_from(hi * 16 + lo).map_err(|_| DnError::BadEscape { at })?),
                _ => return Err(DnError::BadEscape { at }),
            },
            Some(c) if !c.is_control() => buf.extend_from_slice(c.encode_utf8(&mut [0u8; 4]).as_bytes()),
            _ => return Err(DnError::BadEscape { at }),
        }
        Ok(())
    }

    /// RFC 4514 '#' form: hex of a DER value, decoded like a certificate value so it compares the same.
    fn hex_value(&mut self) -> Result<Value, DnError> {
        let at = self.pos;
        self.pos += 1;
        let mut digits = String::new();
        while let Some(c) = self.peek().filter(|&c| c != '+' && c != self.sep) {
            digits.push(c);
            self.pos += 1;
        }
        let bytes = hex::decode(digits.trim_end()).map_err(|_| DnError::BadHexValue { at })?;
        match Any::from_der(&bytes) {
            Ok(([], any)) => Ok(value_from_any(&any)),
            _ => Err(DnError::BadHexValue { at }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BmpString, CertificateParams, DistinguishedName, DnType, DnValue, KeyPair};
    use std::collections::HashSet;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const PROD: &str = "CN=CrossborderServicesNotification-prod.mastercard.com, OU=admin, \
                        O=MasterCard International Incorporated, L=O'Fallon, ST=Missouri, C=US";
    const MTF: &str = "CN=CrossborderServicesNotification-mtf.mastercard.com, OU=admin, \
                       O=MasterCard International Incorporated, L=O'Fallon, ST=Missouri, C=US";

    /// Self-signed certificate whose subject has these attributes in this (DER) order.
    fn cert(attrs: Vec<(DnType, DnValue)>) -> Result<Vec<u8>, rcgen::Error> {
        let mut params = CertificateParams::new(vec![])?;
        let mut dn = DistinguishedName::new();
        for (ty, v) in attrs {
            dn.push(ty, v);
        }
        params.distinguished_name = dn;
        Ok(params.self_signed(&KeyPair::generate()?)?.der().to_vec())
    }

    fn mastercard(cn: &str) -> Result<Vec<u8>, rcgen::Error> {
        cert(vec![
            (DnType::CountryName, "US".into()),
            (DnType::StateOrProvinceName, "Missouri".into()),
            (DnType::LocalityName, "O'Fallon".into()),
            (DnType::OrganizationName, "MasterCard International Incorporated".into()),
            (DnType::OrganizationalUnitName, "admin".into()),
            (DnType::CommonName, cn.into()),
        ])
    }

    fn dn(s: &str) -> ClientDn {
        ClientDn::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn mastercard_written_forms_match_certificate() -> TestResult {
        let id = ClientIdentity::from_leaf_der(&mastercard("CrossborderServicesNotification-prod.mastercard.com")?)?;
        let forms = [
            PROD,
            "CN=CrossborderServicesNotification-prod.mastercard.com,OU=admin,O=MasterCard International Incorporated,L=O'Fallon,ST=Missouri,C=US",
            "cn=CrossborderServicesNotification-prod.mastercard.com, ou=admin, o=MasterCard International Incorporated, l=O'Fallon, st=Missouri, c=US",
            r"CN=CrossborderServicesNotification-prod.mastercard.com, OU=admin, O=MasterCard International Incorporated, L=O\'Fallon, ST=Missouri, C=US",
            r"CN=CrossborderServicesNotification-prod.mastercard.com, OU=admin, O=MasterCard International Incorporated, L=O\27Fallon, ST=Missouri, C=US",
            "/C=US/ST=Missouri/L=O'Fallon/O=MasterCard International Incorporated/OU=admin/CN=CrossborderServicesNotification-prod.mastercard.com",
            "2.5.4.3 = CrossborderServicesNotification-prod.mastercard.com , OID.2.5.4.11=admin,O=MasterCard International Incorporated,L=O'Fallon,ST=Missouri,C=US",
        ];
        for form in forms {
            assert_eq!(id.dn, dn(form), "{form}");
        }
        let canonical = "CN=CrossborderServicesNotification-prod.mastercard.com,OU=admin,\
                         O=MasterCard International Incorporated,L=O'Fallon,ST=Missouri,C=US";
        assert_eq!(id.dn.as_str(), canonical);
        assert_eq!(id.dn.to_string(), canonical);
        assert_eq!(dn(PROD).as_str(), canonical);
        let mtf = ClientIdentity::from_leaf_der(&mastercard("CrossborderServicesNotification-mtf.mastercard.com")?)?;
        assert_eq!(mtf.dn, dn(MTF));
        assert_ne!(mtf.dn, id.dn);
        Ok(())
    }

    #[test]
    fn different_dns_are_not_equal() -> TestResult {
        let id = ClientIdentity::from_leaf_der(&mastercard("CrossborderServicesNotification-prod.mastercard.com")?)?;
        for other in [
            MTF,
            "CN=evil.example.com, OU=admin, O=MasterCard International Incorporated, L=O'Fallon, ST=Missouri, C=US",
            "OU=admin, CN=CrossborderServicesNotification-prod.mastercard.com, O=MasterCard International Incorporated, L=O'Fallon, ST=Missouri, C=US",
            "/CN=CrossborderServicesNotification-prod.mastercard.com/OU=admin/O=MasterCard International Incorporated/L=O'Fallon/ST=Missouri/C=US",
            "CN=CrossborderServicesNotification-prod.mastercard.com, OU=Admin, O=MasterCard International Incorporated, L=O'Fallon, ST=Missouri, C=US",
            "CN=CrossborderServicesNotification-prod.mastercard.com, OU=admin, O=MasterCard International Incorporated, L=O'Fallon, ST=Missouri",
            "CN=CrossborderServicesNotification-prod.mastercard.com+OU=admin, O=MasterCard International Incorporated, L=O'Fallon, ST=Missouri, C=US",
        ] {
            assert_ne!(id.dn, dn(other), "{other}");
        }
        Ok(())
    }

    #[test]
    fn parse_errors() {
        use DnError::*;
        let bad_oid = |s: &str| BadOid(s.to_owned());
        let cases = [
            ("", Empty),
            ("   ", Empty),
            ("CN", MissingEquals { at: 2 }),
            ("CN=a,,O=b", EmptyRdn { at: 5 }),
            ("CN=a,", EmptyRdn { at: 5 }),
            ("CN=a+", EmptyRdn { at: 5 }),
            ("/C=US/", EmptyRdn { at: 6 }),
            ("=a", MissingType { at: 0 }),
            ("XX=a", UnknownAttribute("XX".into())),
            ("1..2=a", bad_oid("1..2")),
            ("OID.2.05.4=a", bad_oid("OID.2.05.4")),
            (r"CN=a\", BadEscape { at: 4 }),
            (r"CN=a\4g", BadEscape { at: 4 }),
            (r"CN=a\4", BadEscape { at: 4 }),
            (r"CN=a\C3", BadEscape { at: 3 }), // lone UTF-8 lead byte
            ("CN=\"a\"", QuotedValue { at: 3 }),
            ("CN= \"a,b\"", QuotedValue { at: 4 }),
            ("CN=a;O=b", UnescapedChar { ch: ';', at: 4 }),
            ("CN=a\nb", UnescapedChar { ch: '\n', at: 4 }),
            ("CN=#zz", BadHexValue { at: 3 }),
            ("CN=#0c05", BadHexValue { at: 3 }), // truncated DER
        ];
        for (input, want) in cases {
            assert_eq!(ClientDn::parse(input).err(), Some(want), "{input:?}");
        }
        let msg = ClientDn::parse("XX=a").err().map(|e| e.to_string());
        assert!(msg.is_some_and(|m| m.contains("\"XX\"")));
    }

    #[test]
    fn escaped_specials_round_trip() {
        let d = dn(r#"CN=a\,b\+c\=d\\e\;f\<g\>h\" , O=x=y, OU=\#tag, L=\ sp\20"#);
        assert_eq!(d.as_str(), r#"CN=a\,b\+c=d\\e\;f\<g\>h\",O=x=y,OU=\#tag,L=\ sp\ "#);
        assert_eq!(dn(d.as_str()), d);
        assert_eq!(dn(d.as_str()).as_str(), d.as_str());
        assert_eq!(dn("CN=a,O=b\\,c"), dn("/O=b,c/CN=a"));
        assert_eq!(dn(r"CN=\C3\BCber"), dn("CN=über"));
        assert_eq!(dn("CN=über").as_str(), "CN=über");
    }

    #[test]
    fn config_spaces_trimmed_escaped_spaces_kept() {
        assert_eq!(dn("  CN =  a b  ,   O=c  "), dn("CN=a b,O=c"));
        assert_ne!(dn(r"CN=\ a"), dn("CN=a"));
        assert_ne!(dn(r"CN=a\ "), dn("CN=a"));
        assert_eq!(dn(r"CN=\ a\ ").as_str(), r"CN=\ a\ ");
        assert_eq!(dn("CN=").as_str(), "CN=");
    }

    #[test]
    fn multi_valued_rdn_is_a_set_but_rdn_order_matters() {
        assert_eq!(dn("CN=a+UID=b,O=c"), dn("uid=b + cn=a, o=c"));
        assert_eq!(dn("CN=a+UID=b,O=c"), dn("/O=c/UID=b+CN=a"));
        assert_eq!(dn("uid=b + cn=a, o=c").as_str(), "UID=b+CN=a,O=c");
        assert_ne!(dn("CN=a+UID=b,O=c"), dn("CN=a,UID=b,O=c"));
    }

    #[test]
    fn attribute_type_spellings_and_unknown_oids() {
        assert_eq!(dn("2.5.4.3=a"), dn("cn=a"));
        assert_eq!(dn("oid.2.5.4.3=a"), dn("commonName=a"));
        assert_eq!(dn("E=x@y,SN=s,GN=g").as_str(), "emailAddress=x@y,SN=s,GN=g");
        assert_eq!(dn("OID.1.2.3.4=x").as_str(), "1.2.3.4=x");
        assert_ne!(dn("1.2.3.4=x"), dn("1.2.3.5=x"));
    }

    #[test]
    fn hex_values_compare_like_certificate_values() {
        // UTF8String "a" written as BER hex is the same value as the string a.
        assert_eq!(dn("CN=#0c0161"), dn("CN=a"));
        let octets = dn("1.2.3.4=#0402BEEF");
        assert_eq!(octets.as_str(), "1.2.3.4=#0402beef");
        assert_eq!(dn(octets.as_str()), octets);
        assert_ne!(octets, dn(r"1.2.3.4=\#0402beef"));
    }

    #[test]
    fn non_utf8_string_types_in_certificates() -> TestResult {
        let der = cert(vec![
            (DnType::CommonName, DnValue::BmpString(BmpString::try_from("Zürich ✓")?)),
            (DnType::CustomDnType(vec![1, 3, 6, 1, 4, 1, 99999, 1]), "x+y".into()),
        ])?;
        let id = ClientIdentity::from_leaf_der(&der)?;
        assert_eq!(id.dn.as_str(), r"1.3.6.1.4.1.99999.1=x\+y,CN=Zürich ✓");
        assert_eq!(id.dn, dn(r"1.3.6.1.4.1.99999.1=x\+y, CN=Z\C3\BCrich \E2\9C\93"));
        Ok(())
    }

    #[test]
    fn display_escapes_control_characters() -> TestResult {
        let id = ClientIdentity::from_leaf_der(&cert(vec![(DnType::CommonName, "a\u{0}b\nc".into())])?)?;
        assert_eq!(id.dn.as_str(), r"CN=a\00b\0Ac");
        assert_eq!(dn(id.dn.as_str()), id.dn);
        Ok(())
    }

    #[test]
    fn sha256_pin_is_of_the_der() -> TestResult {
        let der = mastercard("x")?;
        let id = ClientIdentity::from_leaf_der(&der)?;
        let want: [u8; 32] = Sha256::digest(&der).into();
        assert_eq!(id.sha256, want);
        assert_eq!(id.sha256_hex(), hex::encode(want));
        assert_eq!(id.sha256_hex(), id.sha256_hex().to_lowercase());
        assert_eq!(id.sha256_hex().len(), 64);
        Ok(())
    }

    #[test]
    fn hash_agrees_with_eq() {
        let set: HashSet<ClientDn> = [
            PROD,
            &PROD.replace(", ", ","),
            &PROD.to_lowercase().replace("cn=c", "CN=C"),
        ]
        .iter()
        .map(|s| dn(s))
        .collect();
        // The lower-cased form changes values too, so it is a second entry.
        assert_eq!(set.len(), 2);
        assert!(set.contains(&dn("/C=US/ST=Missouri/L=O'Fallon/O=MasterCard International Incorporated/OU=admin/CN=CrossborderServicesNotification-prod.mastercard.com")));
    }

    #[test]
    fn garbage_der_is_an_error_not_a_panic() -> TestResult {
        let der = mastercard("CrossborderServicesNotification-prod.mastercard.com")?;
        assert!(ClientIdentity::from_leaf_der(&[]).is_err());
        assert!(ClientIdentity::from_leaf_der(&[0x30]).is_err());
        assert!(ClientIdentity::from_leaf_der(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(ClientIdentity::from_leaf_der(&[der.as_slice(), &[0]].concat()).is_err());
        for len in 0..der.len() {
            assert!(
                ClientIdentity::from_leaf_der(der.get(..len).unwrap_or_default()).is_err(),
                "len {len}"
            );
        }
        // Deterministic pseudo-random bytes and single-byte corruptions must never panic.
        let mut x: u32 = 0x1234_5678;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_le_bytes()[0]
        };
        for len in [1, 2, 16, 300, 4096] {
            let bytes: Vec<u8> = (0..len).map(|_| next()).collect();
            assert!(ClientIdentity::from_leaf_der(&bytes).is_err());
        }
        for i in 0..der.len() {
            let mut bad = der.clone();
            if let Some(b) = bad.get_mut(i) {
                *b ^= next() | 1;
            }
            let _ = ClientIdentity::from_leaf_der(&bad);
        }
        Ok(())
    }
}
