//! coturn's `turnserver.conf` syntax, as coturn's own reader takes it: a line whose first
//! non-blank character is `#` is a comment (a `#` later in a line is part of the value),
//! the option name runs up to the first space, tab or `=`, any run of those separates it
//! from the value, a value in double quotes loses them, and a name alone is a flag that
//! is on.

/// One option line of a coturn file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line number in the file.
    pub line: usize,
    pub name: String,
    /// `None` for a bare flag (`fingerprint`).
    pub value: Option<String>,
}

/// Every option line of `text`, in file order.
pub fn entries(text: &str) -> Vec<Entry> {
    text.lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let is_separator = |c: char| c == ' ' || c == '\t' || c == '=';
            let (name, rest) = match line.find(is_separator) {
                Some(at) => line.split_at(at),
                None => (line, ""),
            };
            let mut value = rest.trim_start_matches(is_separator);
            if let Some(quoted) = value.strip_prefix('"') {
                value = quoted.strip_suffix('"').unwrap_or(quoted);
            }
            Some(Entry {
                line: i + 1,
                name: name.to_owned(),
                value: (!value.is_empty()).then(|| value.to_owned()),
            })
        })
        .collect()
}

/// A flag's value as coturn reads it: absent, `1`-`9...`, `y...`, `t...`, `on` are on;
/// `0...`, `n...`, `f...`, `off` are off; anything else is an error (coturn exits).
pub fn flag(value: Option<&str>) -> Option<bool> {
    let Some(v) = value else {
        return Some(true);
    };
    match v.as_bytes().first() {
        Some(b'0' | b'n' | b'N' | b'f' | b'F') => Some(false),
        Some(b'1'..=b'9' | b'y' | b'Y' | b't' | b'T') => Some(true),
        _ if v.eq_ignore_ascii_case("off") => Some(false),
        _ if v.eq_ignore_ascii_case("on") => Some(true),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> (String, Option<String>) {
        let e = entries(line);
        assert_eq!(e.len(), 1, "{line}");
        (e[0].name.clone(), e[0].value.clone())
    }

    #[test]
    fn every_spelling_coturn_reads() {
        let v = |s: &str| Some(s.to_owned());
        assert_eq!(
            one("listening-port=3478"),
            ("listening-port".into(), v("3478"))
        );
        assert_eq!(
            one("listening-port 3478"),
            ("listening-port".into(), v("3478"))
        );
        assert_eq!(
            one("  realm = example.org  "),
            ("realm".into(), v("example.org"))
        );
        assert_eq!(one("realm\t\"ex ample\""), ("realm".into(), v("ex ample")));
        assert_eq!(one("fingerprint"), ("fingerprint".into(), None));
        assert_eq!(one("fingerprint="), ("fingerprint".into(), None));
        // A `#` after the name is part of the value, as in coturn.
        assert_eq!(one("user=a:b#c"), ("user".into(), v("a:b#c")));
        // Only the first `=` run separates: a secret may contain `=`.
        assert_eq!(
            one("static-auth-secret=abc=="),
            ("static-auth-secret".into(), v("abc=="))
        );
    }

    #[test]
    fn comments_and_blank_lines_are_skipped_and_lines_counted() {
        let e = entries("# c\n\n   # indented\nno-tcp\r\n\nrealm=x\n");
        let lines: Vec<(usize, &str)> = e.iter().map(|e| (e.line, e.name.as_str())).collect();
        assert_eq!(lines, [(4, "no-tcp"), (6, "realm")]);
    }

    #[test]
    fn flags_read_like_coturn() {
        for on in [
            None,
            Some("1"),
            Some("yes"),
            Some("true"),
            Some("on"),
            Some("ON"),
        ] {
            assert_eq!(flag(on), Some(true), "{on:?}");
        }
        for off in [
            Some("0"),
            Some("no"),
            Some("false"),
            Some("off"),
            Some("Off"),
        ] {
            assert_eq!(flag(off), Some(false), "{off:?}");
        }
        assert_eq!(flag(Some("maybe")), None);
        assert_eq!(flag(Some("")), None);
    }
}
