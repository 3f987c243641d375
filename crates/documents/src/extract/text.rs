//! Plain text and Markdown, and the normalisation every format's text goes through.

use super::{Problem, Raw};

/// Decodes a TXT or Markdown document: UTF-8 (a byte-order mark is dropped by the normaliser),
/// nothing else — guessing a legacy encoding would silently corrupt names and symbols.
pub(super) fn decode(bytes: &[u8]) -> Result<Raw, Problem> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(Raw { text: text.to_owned(), ..Raw::default() }),
        Err(e) => Err(Problem::NotUtf8(e.valid_up_to())),
    }
}

/// Normalises extracted text so that the same document always gives the same text, whatever
/// produced it: line endings become `\n`; tabs and Unicode spaces become one space, runs of
/// spaces collapse and lines are trimmed; invisible characters (zero-width, soft hyphen, BOM,
/// other control characters) are dropped; typographic ligatures (`ﬁ`) are spelled out; runs of
/// blank lines become one blank line (a paragraph break); no blank lines at either end.
///
/// The result is the reference text of a document: every cited span is a byte range of it, so
/// this function must stay deterministic (and changing it changes every stored citation).
pub fn normalize_text(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut line = String::new();
    let mut blank_pending = false;
    let mut chars = raw.chars().peekable();
    loop {
        let c = chars.next();
        let end_of_line = match c {
            None => true,
            Some('\r') => {
                chars.next_if_eq(&'\n');
                true
            }
            Some('\n' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}') => true,
            Some(c) => {
                push_normalized(&mut line, c);
                false
            }
        };
        if end_of_line {
            let trimmed = line.trim_end_matches(' ');
            if trimmed.is_empty() {
                blank_pending |= !out.is_empty();
            } else {
                if !out.is_empty() {
                    out.push('\n');
                    if blank_pending {
                        out.push('\n');
                    }
                }
                out.push_str(trimmed);
                blank_pending = false;
            }
            line.clear();
        }
        if c.is_none() {
            return out;
        }
    }
}

/// Appends one character of a line, mapped; spaces collapse and never lead the line.
fn push_normalized(line: &mut String, c: char) {
    match c {
        '\t' | ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}' => {
            if !line.is_empty() && !line.ends_with(' ') {
                line.push(' ');
            }
        }
        '\u{AD}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' => {}
        'ﬀ' => line.push_str("ff"),
        'ﬁ' => line.push_str("fi"),
        'ﬂ' => line.push_str("fl"),
        'ﬃ' => line.push_str("ffi"),
        'ﬄ' => line.push_str("ffl"),
        'ﬅ' | 'ﬆ' => line.push_str("st"),
        // Bullets of Word's Symbol and Wingdings fonts, which PDFs exported from Word carry as
        // private-use code points.
        '\u{F0B7}' | '\u{F0A7}' => line.push('•'),
        c if c.is_control() => {}
        c => line.push(c),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn whitespace_line_endings_and_invisible_characters() {
        let raw = "\u{FEFF}\r\n  Claims\u{A0}\u{A0}Adjuster \t\r\n\r\n\r\n\n  - Review\u{AD} ﬁrst   notice\u{200B}\rend\x0cpage 2\n\n";
        assert_eq!(normalize_text(raw), "Claims Adjuster\n\n- Review first notice\nend\npage 2");
        assert_eq!(normalize_text(" \n\t\n"), "");
        assert_eq!(normalize_text("a\u{0}b\u{7}c"), "abc");
    }

    proptest! {
        #[test]
        fn normalised_text_is_a_fixed_point_and_clean(raw in "\\PC{0,200}|[ \t\r\n\u{A0}a-c\u{AD}\u{FEFF}]{0,60}") {
            let once = normalize_text(&raw);
            prop_assert_eq!(normalize_text(&once), once.clone());
            prop_assert!(!once.contains('\r') && !once.contains("\n\n\n") && !once.contains("  "));
            prop_assert!(!once.starts_with(char::is_whitespace) && !once.ends_with(char::is_whitespace));
            prop_assert!(once.chars().all(|c| c == '\n' || !c.is_control()));
            prop_assert!(once.lines().all(|l| l == l.trim()));
        }
    }
}
