//! Escaping text for SVG/XML content and double-quoted attribute values.
//!
//! Hand-written because the crates looked at do not make any string safe:
//! the `svg` crate (0.18) escapes only `&`, `<` and `>`, also in attribute
//! values (a `"` in an interface name would end the attribute), and neither
//! it nor the HTML escapers drop the control characters XML 1.0 forbids
//! even as character references. Interface names and origins come from
//! clients and may hold any of these.

use std::borrow::Cow;

/// Whether XML 1.0 allows `c` in a document (Char production, §2.2).
fn allowed(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// `s` escaped for text and attribute values: `& < > " '` as entities,
/// characters XML does not allow as U+FFFD.
pub fn esc(s: &str) -> Cow<'_, str> {
    if s.chars()
        .all(|c| allowed(c) && !matches!(c, '&' | '<' | '>' | '"' | '\''))
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if !allowed(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_drops_forbidden_characters() {
        assert!(matches!(esc("wlan0"), Cow::Borrowed("wlan0")));
        assert_eq!(esc(r#"a<b>&"c'"#), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert_eq!(esc("x\u{1}y\u{FFFF}\tz"), "x\u{FFFD}y\u{FFFD}\tz");
        assert_eq!(esc("Wi\u{2011}Fi \u{1F4F6}"), "Wi\u{2011}Fi \u{1F4F6}");
    }
}
