//! Query string parameters, as route matches read them.

use std::borrow::Cow;

/// The first value of parameter `name` in `query` (without `?`),
/// percent-decoded; `Some("")` for `?name` or `?name=`.
pub(crate) fn first_value<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (!key.is_empty() && decode(key) == name).then(|| decode(value))
    })
}

/// Percent-decoding; invalid escapes and non-UTF-8 results stay as written.
fn decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .filter(|hex| bytes.get(i) == Some(&b'%') && hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.extend(bytes.get(i));
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_or(Cow::Borrowed(s), Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_first_decoded_value() {
        let q = "a=1&b=x%20y&a=2&flag&empty=";
        assert_eq!(first_value(q, "a").as_deref(), Some("1"));
        assert_eq!(first_value(q, "b").as_deref(), Some("x y"));
        assert_eq!(first_value(q, "flag").as_deref(), Some(""));
        assert_eq!(first_value(q, "empty").as_deref(), Some(""));
        assert_eq!(first_value(q, "c"), None);
        assert_eq!(first_value("bad=%zz%", "bad").as_deref(), Some("%zz%"));
        assert_eq!(first_value("", "a"), None);
        assert_eq!(first_value("s=%+1", "s").as_deref(), Some("%+1"));
    }
}
