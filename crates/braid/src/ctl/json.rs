//! `--json`: the API's JSON as it came, re-indented, never re-encoded.
//!
//! What this file owns: the layout of JSON text (pretty, as `serde_json::to_string_pretty`
//! lays it out, or compact for one line per `stats --watch` refresh). It works on the text,
//! so keys keep the server's order and numbers their spelling; going through
//! `serde_json::Value` would sort the keys (its map is a `BTreeMap` unless serde_json's
//! `preserve_order` feature is on, and that feature would change every crate of the
//! workspace). The text is checked to be JSON first ([`check`]).

/// Is `text` one JSON value?
///
/// # Errors
/// serde_json's error, with line and column.
pub(crate) fn check(text: &str) -> Result<(), serde_json::Error> {
    serde_json::from_str::<serde::de::IgnoredAny>(text).map(|_| ())
}

/// `text` (valid JSON) laid out again: `pretty` with two-space indents and one member a
/// line, else on one line without spaces. Whitespace inside strings is kept.
pub(crate) fn layout(text: &str, pretty: bool) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    // After `{` or `[`: the line break waits for the next token, so `{}` and `[]` stay whole.
    let mut opened = false;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", depth));
    };
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        if c.is_ascii_whitespace() {
            continue;
        }
        if c == '}' || c == ']' {
            depth = depth.saturating_sub(1);
            if !opened && pretty {
                newline(&mut out, depth);
            }
            opened = false;
            out.push(c);
            continue;
        }
        if opened {
            opened = false;
            if pretty {
                newline(&mut out, depth);
            }
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                depth += 1;
                opened = true;
            }
            ',' => {
                out.push(c);
                if pretty {
                    newline(&mut out, depth);
                }
            }
            ':' => {
                out.push(c);
                if pretty {
                    out.push(' ');
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str =
        r#"{"name":"a","flows":[],"q":{},"s":"x, y: {z}\" ]","n":[1,2.50,{"k":null}]}"#;

    #[test]
    fn pretty_is_serde_jsons_layout_in_the_servers_key_order() {
        let pretty = layout(BODY, true);
        assert_eq!(
            pretty,
            "{\n  \"name\": \"a\",\n  \"flows\": [],\n  \"q\": {},\n  \"s\": \"x, y: {z}\\\" ]\",\n  \
             \"n\": [\n    1,\n    2.50,\n    {\n      \"k\": null\n    }\n  ]\n}"
        );
        // The layout serde_json gives; it sorts keys, so compare on a body already sorted.
        let sorted = r#"{"a":[1,{"b":[]}],"c":{"d":"e"}}"#;
        let value: serde_json::Value = serde_json::from_str(sorted).expect("json");
        assert_eq!(
            layout(sorted, true),
            serde_json::to_string_pretty(&value).expect("pretty")
        );
    }

    #[test]
    fn compact_is_one_line_and_both_read_back_the_same() {
        let pretty = layout(BODY, true);
        assert_eq!(layout(&pretty, false), BODY);
        check(&pretty).expect("still JSON");
        let a: serde_json::Value = serde_json::from_str(&pretty).expect("json");
        let b: serde_json::Value = serde_json::from_str(BODY).expect("json");
        assert_eq!(a, b);
        assert!(check("{\"a\":").is_err());
    }
}
