//! HBONE request headers: `Forwarded: for=<ip>` (RFC 7239) and a W3C
//! `traceparent`.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::HeaderValue;

/// `for=1.2.3.4` or `for="[2001:db8::1]"` (RFC 7239 quotes IPv6).
pub fn forwarded_for(ip: IpAddr) -> HeaderValue {
    let text = match ip {
        IpAddr::V4(v4) => format!("for={v4}"),
        IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
    };
    // Digits, dots, colons, brackets and quotes are always valid header bytes.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("for=unknown"))
}

/// The client IP from a `Forwarded` header, if it carries one.
pub fn parse_forwarded_for(value: &HeaderValue) -> Option<IpAddr> {
    let text = value.to_str().ok()?;
    text.split([';', ','])
        .map(str::trim)
        .find_map(|pair| {
            let (key, val) = pair.split_once('=')?;
            key.eq_ignore_ascii_case("for").then_some(val)
        })
        .and_then(|val| {
            let val = val.trim_matches('"');
            let val = val
                .strip_prefix('[')
                .and_then(|v| v.split_once(']').map(|(ip, _)| ip))
                .unwrap_or(val);
            val.parse().ok()
        })
}

/// A fresh `traceparent`: version 00, random trace and span ids, sampled.
pub fn traceparent() -> HeaderValue {
    let trace: u128 = rand::random::<u128>() | 1; // all-zero ids are invalid
    let span: u64 = rand::random::<u64>() | 1;
    let mut text = String::with_capacity(55);
    let _ = write!(text, "00-{trace:032x}-{span:016x}-01");
    HeaderValue::from_str(&text).unwrap_or_else(|_| {
        HeaderValue::from_static("00-00000000000000000000000000000001-0000000000000001-01")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_round_trips_v4_and_v6() {
        for ip in ["10.1.2.3", "2001:db8::7"] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(parse_forwarded_for(&forwarded_for(ip)), Some(ip));
        }
        assert_eq!(
            parse_forwarded_for(&HeaderValue::from_static("proto=https;for=192.0.2.60")),
            Some("192.0.2.60".parse().expect("ip"))
        );
        assert_eq!(
            parse_forwarded_for(&HeaderValue::from_static("for=unknown")),
            None
        );
    }

    #[test]
    fn traceparent_has_w3c_shape() {
        let a = traceparent();
        let b = traceparent();
        let text = a.to_str().expect("ascii");
        let parts: Vec<&str> = text.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len(), parts[3]),
            ("00", 32, 16, "01")
        );
        assert_ne!(a, b, "ids must be random per request");
    }
}
