//! Request identity across hops: `x-request-id` (generated when absent, as
//! Envoy does) and W3C trace context (`traceparent` continued with a new
//! span id, so the waypoint shows up as one hop of the trace).

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use rand::Rng;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The request's id: the one it carries, or a new UUID (v4) set on it.
pub fn ensure_request_id<R: Rng + ?Sized>(headers: &mut HeaderMap, rng: &mut R) -> HeaderValue {
    if let Some(id) = headers.get(&REQUEST_ID).filter(|v| !v.is_empty()) {
        return id.clone();
    }
    let id = uuid_v4(rng.random());
    // Hex digits and dashes: always a valid header value.
    let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("-"));
    headers.insert(REQUEST_ID.clone(), value.clone());
    value
}

fn uuid_v4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex(&bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// One hop of a W3C trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// This hop's span id.
    pub span_id: [u8; 8],
    /// The caller's span id, when the request came with a valid context.
    pub parent_id: Option<[u8; 8]>,
    pub sampled: bool,
}

impl TraceContext {
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            u8::from(self.sampled)
        )
    }
}

/// Continues the request's trace (or starts one when it has no valid
/// `traceparent`) with a new span id, and sets `traceparent` for the next
/// hop. `tracestate` is passed on untouched, as the spec asks of a hop
/// that adds nothing to it.
pub fn propagate<R: Rng + ?Sized>(headers: &mut HeaderMap, rng: &mut R) -> TraceContext {
    let incoming = headers
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent);
    let context = TraceContext {
        trace_id: incoming.map_or_else(|| non_zero(rng), |(trace, _, _)| trace),
        span_id: non_zero(rng),
        parent_id: incoming.map(|(_, parent, _)| parent),
        sampled: incoming.is_none_or(|(_, _, sampled)| sampled),
    };
    if let Ok(value) = HeaderValue::from_str(&context.traceparent()) {
        headers.insert(TRACEPARENT.clone(), value);
    }
    context
}

fn non_zero<const N: usize, R: Rng + ?Sized>(rng: &mut R) -> [u8; N] {
    // Bounded: an all-zero id from a working RNG is astronomically rare.
    for _ in 0..8 {
        let id: [u8; N] = rng.random();
        if id.iter().any(|&b| b != 0) {
            return id;
        }
    }
    let mut id = [0u8; N];
    if let Some(last) = id.last_mut() {
        *last = 1;
    }
    id
}

/// `version-traceid-parentid-flags` (W3C Trace Context §3.2): (trace id,
/// parent id, sampled), or `None` when invalid (the spec then starts a new
/// trace). Later versions may append fields; version `ff` is invalid.
pub fn parse_traceparent(value: &str) -> Option<([u8; 16], [u8; 8], bool)> {
    let mut fields = value.trim().split('-');
    let version = fields.next()?;
    let trace = fields.next()?;
    let parent = fields.next()?;
    let flags = fields.next()?;
    let version = lower_hex::<1>(version)?[0];
    if version == 0xff || (version == 0 && fields.next().is_some()) {
        return None;
    }
    let trace_id = lower_hex::<16>(trace)?;
    let parent_id = lower_hex::<8>(parent)?;
    let flags = lower_hex::<1>(flags)?[0];
    let zero = |b: &[u8]| b.iter().all(|&x| x == 0);
    if zero(&trace_id) || zero(&parent_id) {
        return None;
    }
    Some((trace_id, parent_id, flags & 1 == 1))
}

fn lower_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn keeps_a_request_id_and_makes_one_when_absent() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut headers = HeaderMap::new();
        headers.insert(&REQUEST_ID, HeaderValue::from_static("abc"));
        assert_eq!(ensure_request_id(&mut headers, &mut rng), "abc");

        let mut headers = HeaderMap::new();
        let id = ensure_request_id(&mut headers, &mut rng);
        let id = id.to_str().unwrap();
        assert_eq!(headers[&REQUEST_ID], id);
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'), "version 4: {id}");
        assert!(
            matches!(&parts[3][..1], "8" | "9" | "a" | "b"),
            "variant: {id}"
        );
        let other = ensure_request_id(&mut HeaderMap::new(), &mut rng);
        assert_ne!(other.to_str().unwrap(), id);
    }

    #[test]
    fn continues_a_trace_with_a_new_span() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut headers = HeaderMap::new();
        headers.insert(&TRACEPARENT, HeaderValue::from_static(PARENT));
        headers.insert("tracestate", HeaderValue::from_static("congo=t61rcWkgMzE"));
        let ctx = propagate(&mut headers, &mut rng);
        let out = headers[&TRACEPARENT].to_str().unwrap().to_owned();
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{out}"
        );
        assert!(out.ends_with("-01"), "{out}");
        assert_ne!(&out[36..52], "00f067aa0ba902b7", "a new span id");
        assert_eq!(
            ctx.parent_id.map(|p| hex(&p)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_eq!(headers["tracestate"], "congo=t61rcWkgMzE");
        assert_eq!(parse_traceparent(&out).map(|t| t.0), Some(ctx.trace_id));
    }

    #[test]
    fn an_unsampled_trace_stays_unsampled() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut headers = HeaderMap::new();
        let unsampled = PARENT.replace("-01", "-00");
        headers.insert(&TRACEPARENT, HeaderValue::from_str(&unsampled).unwrap());
        assert!(!propagate(&mut headers, &mut rng).sampled);
        assert!(headers[&TRACEPARENT].to_str().unwrap().ends_with("-00"));
    }

    #[test]
    fn an_invalid_or_missing_traceparent_starts_a_new_trace() {
        let mut rng = StdRng::seed_from_u64(4);
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(bad) {
                headers.insert(&TRACEPARENT, v);
            }
            let ctx = propagate(&mut headers, &mut rng);
            assert_eq!(ctx.parent_id, None, "{bad:?}");
            assert!(ctx.sampled);
            let out = headers[&TRACEPARENT].to_str().unwrap();
            assert_eq!(parse_traceparent(out).map(|t| t.0), Some(ctx.trace_id));
        }
        // A later version with extra fields is read by its first four.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
                .is_some()
        );
    }
}
