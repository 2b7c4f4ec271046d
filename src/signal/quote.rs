//! Go string literals: the one way a metadata value enters a PromQL or TraceQL query.
//!
//! Both languages read `"…"` with Go's rules. Prometheus' lexer scans the literal
//! (`promql/parser/lex.go`, `lexString` / `lexEscape`) and the parser decodes it with
//! `strutil.Unquote`, a copy of Go's `strconv.Unquote`; Tempo's lexer scans it with Go's
//! `text/scanner` and decodes it with `strconv.Unquote` (`pkg/traceql/lexer.go`). What they
//! accept *unescaped* differs: PromQL's lexer refuses a raw U+FFFD ("invalid UTF-8 rune",
//! it cannot tell it from a bad byte), `text/scanner` refuses a raw NUL, and neither takes
//! a raw newline. So [`go_string`] writes every character that either lexer could refuse,
//! and every one Go's `strconv.Quote` would not print raw among the controls, as an escape
//! both decode, and everything else as is.

use std::fmt::Write as _;

/// Quotes `s` as a Go string literal, quotes included, that PromQL's and TraceQL's lexers
/// both decode back to exactly `s`.
///
/// `\` and `"` are backslash-escaped; newline, CR and tab become `\n`, `\r`, `\t`; other
/// ASCII controls (DEL included) `\xNN`; C1 controls, the byte order mark U+FEFF, the line
/// and paragraph separators and the replacement character U+FFFD `\uNNNN`. Everything
/// else, unicode included, is copied as is.
pub fn go_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if c.is_control()
                || matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}' | '\u{fffd}') =>
            {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Splits `query` as both lexers see it: the string literals, decoded with Go's
    /// `strconv.Unquote` rules, and the rest of the text with each literal replaced by
    /// `"…"`. Refuses what either lexer refuses inside a literal: a raw newline, NUL or
    /// U+FFFD, an unknown escape.
    pub(crate) fn lex(query: &str) -> Result<(String, Vec<String>), String> {
        let mut skeleton = String::new();
        let mut literals = Vec::new();
        let mut chars = query.chars();
        while let Some(c) = chars.next() {
            if c != '"' {
                skeleton.push(c);
                continue;
            }
            let mut bytes = Vec::new();
            loop {
                let c = chars.next().ok_or("unterminated string")?;
                match c {
                    '"' => break,
                    '\n' => return Err("newline in string".into()),
                    '\0' => return Err("NUL in string (text/scanner)".into()),
                    '\u{fffd}' => return Err("raw U+FFFD in string (PromQL lexer)".into()),
                    '\\' => {
                        let e = chars.next().ok_or("unterminated escape")?;
                        let simple = match e {
                            'a' => Some(7u8),
                            'b' => Some(8),
                            'f' => Some(12),
                            'n' => Some(b'\n'),
                            'r' => Some(b'\r'),
                            't' => Some(b'\t'),
                            'v' => Some(11),
                            '\\' => Some(b'\\'),
                            '"' => Some(b'"'),
                            _ => None,
                        };
                        if let Some(b) = simple {
                            bytes.push(b);
                            continue;
                        }
                        let digits = |n: usize, chars: &mut std::str::Chars| -> String {
                            chars.take(n).collect()
                        };
                        match e {
                            'x' => {
                                let h = digits(2, &mut chars);
                                let b = u8::from_str_radix(&h, 16)
                                    .map_err(|_| format!("bad \\x{h}"))?;
                                bytes.push(b);
                            }
                            'u' | 'U' => {
                                let h = digits(if e == 'u' { 4 } else { 8 }, &mut chars);
                                let cp = u32::from_str_radix(&h, 16)
                                    .map_err(|_| format!("bad \\{e}{h}"))?;
                                let ch = char::from_u32(cp).ok_or("bad code point")?;
                                let mut buf = [0u8; 4];
                                bytes.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                            }
                            '0'..='7' => {
                                let rest = digits(2, &mut chars);
                                let o = u8::from_str_radix(&format!("{e}{rest}"), 8)
                                    .map_err(|_| "bad octal escape")?;
                                bytes.push(o);
                            }
                            other => return Err(format!("unknown escape \\{other}")),
                        }
                    }
                    c => {
                        let mut buf = [0u8; 4];
                        bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
            literals.push(String::from_utf8(bytes).map_err(|e| e.to_string())?);
            skeleton.push_str("\"…\"");
        }
        Ok((skeleton, literals))
    }

    #[test]
    fn quoting() {
        let check = |input: &str, expect: &str| {
            assert_eq!(go_string(input), expect, "{input:?}");
        };
        check("order-service", r#""order-service""#);
        check("", r#""""#);
        check(r#"a"} or vector(1e9) #"#, r#""a\"} or vector(1e9) #""#);
        check(r#"a"b"#, r#""a\"b""#);
        check(r"back\slash", r#""back\\slash""#);
        check(r#"\""#, r#""\\\"""#);
        check("new\nline\r\t", r#""new\nline\r\t""#);
        check("nul\0bell\u{7}del\u{7f}", r#""nul\x00bell\x07del\x7f""#);
        check("esc\x1b", r#""esc\x1b""#);
        check("c1\u{85}\u{9f}bom\u{feff}", r#""c1\u0085\u009fbom\ufeff""#);
        check("ls\u{2028}ps\u{2029}", r#""ls\u2028ps\u2029""#);
        // PromQL's lexer refuses a raw U+FFFD; escaped, both lexers read it.
        check("bad\u{fffd}", r#""bad\ufffd""#);
        check("ünï€ode 東京 🚀", "\"ünï€ode 東京 🚀\"");
        check("{ } | rate() #", r#""{ } | rate() #""#);
    }

    #[test]
    fn quoted_strings_decode_back() {
        let check = |input: &str| {
            let (skeleton, literals) = lex(&go_string(input)).unwrap();
            assert_eq!(skeleton, "\"…\"");
            assert_eq!(literals, vec![input.to_string()]);
        };
        for c in (0u32..0x250).chain([0xfeff, 0xfffd, 0x2028, 0x2029, 0x1f680, 0x10ffff]) {
            if let Some(c) = char::from_u32(c) {
                check(&format!("a{c}b"));
            }
        }
    }
}
