//! Query-string parsing for the admin routes (no dependency needed for one parameter).

/// The first value of `name` in `query` (`a=1&b=2`), URL-decoded (`%XX`,
/// `+` as space). `Ok(None)` if absent; `Err` if it does not decode to UTF-8
/// or has a bad escape.
pub(crate) fn param(query: Option<&str>, name: &str) -> Result<Option<String>, String> {
    let Some(query) = query else { return Ok(None) };
    for pair in query.split('&') {
        // Split at the first '=' only: `level=ztunnel=debug` is a value with '='.
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if decode(k)? == name {
            return decode(v).map(Some);
        }
    }
    Ok(None)
}

/// URL-decodes one query component.
pub(crate) fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent escape at byte {i}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "not valid UTF-8 once decoded".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_params() {
        assert_eq!(
            param(Some("level=debug"), "level").unwrap().as_deref(),
            Some("debug")
        );
        assert_eq!(
            param(Some("x=1&level=ztunnel%3Ddebug%2Cinfo"), "level")
                .unwrap()
                .as_deref(),
            Some("ztunnel=debug,info")
        );
        assert_eq!(
            param(Some("level=ztunnel=debug,info"), "level")
                .unwrap()
                .as_deref(),
            Some("ztunnel=debug,info")
        );
        assert_eq!(
            param(Some("lev%65l=a+b"), "level").unwrap().as_deref(),
            Some("a b")
        );
        assert_eq!(param(Some("level"), "level").unwrap().as_deref(), Some(""));
        assert_eq!(param(Some("other=1"), "level").unwrap(), None);
        assert_eq!(param(None, "level").unwrap(), None);
        assert!(param(Some("level=%zz"), "level").is_err());
        assert!(param(Some("level=%4"), "level").is_err());
        assert!(param(Some("level=%ff"), "level").is_err());
        // Multi-byte UTF-8 survives, and a '%' near the end does not overrun.
        assert_eq!(decode("%C3%A9").unwrap(), "é");
        assert!(decode("%").is_err());
    }
}
