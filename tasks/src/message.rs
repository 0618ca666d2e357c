//! Error messages on one line, the form every error of the lab takes.

/// The longest message (in characters) [`one_line`] keeps: longer ones echo too much of a bad
/// line or a bad file.
pub const MAX_MESSAGE: usize = 300;

/// A message as one short line of text. Parsers' messages (TOML's) span several lines, with the
/// offending line quoted under a header: every run of white space, newlines and Unicode's line
/// separators included, becomes one space. Other control characters (serde echoes a JSON key
/// verbatim, whatever it holds) are escaped, and anything past [`MAX_MESSAGE`] characters is cut
/// off, marked by " ...".
pub fn one_line(message: &str) -> String {
    let unsafe_char = |c: char| c.is_control();
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE + 8));
    for (i, word) in message.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        for c in word.chars() {
            if unsafe_char(c) { out.extend(c.escape_default()) } else { out.push(c) }
        }
    }
    if out.chars().count() > MAX_MESSAGE {
        out = out.chars().take(MAX_MESSAGE).collect::<String>() + " ...";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_become_one_short_line() {
        assert_eq!(
            one_line("TOML parse error at line 1\n  |\n1 | x = ?\n  |     ^\n"),
            "TOML parse error at line 1 | 1 | x = ? | ^"
        );
        assert_eq!(one_line("key \u{7}bell\u{2028}end\r\n"), "key \\u{7}bell end");
        let long = one_line(&"x".repeat(1000));
        assert!(long.ends_with(" ...") && long.chars().count() == MAX_MESSAGE + 4);
        assert_eq!(one_line("short"), "short");
    }
}
