//! Keeps card numbers out of logs: any run of 12 to 19 digits (optionally split by single
//! spaces or dashes, as card numbers are written) that passes the Luhn check, and any run
//! longer than that, in a string that came from a sender is masked to its last four digits
//! before it is logged. Ids, reasons and DNs pass through it. The Luhn check spares most
//! ordinary long numbers (UUID tails, timestamps); every real card number passes it.

use std::borrow::Cow;

/// Shortest and longest digit runs treated as card numbers (ISO/IEC 7812 PANs are 12–19).
const MIN_DIGITS: usize = 12;
const MAX_DIGITS: usize = 19;

/// `s` with every card-number-like digit run masked: `5555 5555 5555 4444` → `************4444`.
pub fn cards(s: &str) -> Cow<'_, str> {
    let bytes = s.as_bytes();
    if bytes.iter().filter(|b| b.is_ascii_digit()).count() < MIN_DIGITS {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            // Not a digit: copy the whole UTF-8 character.
            let ch = s[i..].chars().next().unwrap_or('\u{FFFD}');
            out.push(ch);
            i += ch.len_utf8().max(1);
            continue;
        }
        // A run of digits, allowing one space or dash between groups.
        let start = i;
        let mut end = i;
        let mut digits = 0;
        let mut j = i;
        while j < bytes.len() {
            if bytes[j].is_ascii_digit() {
                digits += 1;
                j += 1;
                end = j;
            } else if matches!(bytes[j], b' ' | b'-') && j + 1 < bytes.len() && bytes[j + 1].is_ascii_digit() {
                j += 1;
            } else {
                break;
            }
        }
        let run = &s[start..end];
        let card_like = (MIN_DIGITS..=MAX_DIGITS).contains(&digits) && luhn(run);
        if card_like || digits > MAX_DIGITS {
            let keep: String = run
                .chars()
                .filter(char::is_ascii_digit)
                .skip(digits.saturating_sub(4))
                .collect();
            out.push_str(&"*".repeat(digits.saturating_sub(4)));
            out.push_str(&keep);
        } else {
            out.push_str(run);
        }
        i = end;
    }
    Cow::Owned(out)
}

/// The Luhn (mod 10) check every payment card number satisfies.
fn luhn(run: &str) -> bool {
    let mut sum = 0u32;
    for (i, d) in run
        .bytes()
        .rev()
        .filter(u8::is_ascii_digit)
        .map(|b| u32::from(b - b'0'))
        .enumerate()
    {
        sum += if i % 2 == 1 {
            let x = d * 2;
            if x > 9 {
                x - 9
            } else {
                x
            }
        } else {
            d
        };
    }
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::cards;

    #[test]
    fn card_numbers_are_masked_wherever_they_appear() {
        assert_eq!(cards("5555555555554444"), "************4444");
        assert_eq!(cards("pan 4111 1111 1111 1111 ok"), "pan ************1111 ok");
        assert_eq!(cards("x-5105-1051-0510-5100-y"), "x-************5100-y");
        assert_eq!(cards("id=378282246310005,"), "id=***********0005,");
    }

    #[test]
    fn ordinary_numbers_and_text_pass() {
        for s in [
            "EVT-123456",
            "2026-11-23T10:00:00Z",
            "O'Fallon",
            "order 12345678901",
            "Zoë ✓ 42",
        ] {
            assert_eq!(cards(s), s);
        }
    }
}
