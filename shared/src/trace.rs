//! W3C Trace Context `traceparent` values.
//!
//! One checkout must be one trace from the browser to the payment provider, so the same
//! `traceparent` travels through HTTP headers, gRPC metadata and NATS headers. Every hop parses
//! it here, so a malformed value from a client never leaks further: it is replaced by a fresh
//! trace rather than rejected (tracing is best effort; the request itself must not fail).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use cart_domain::ids::{IdError, SpanId, TraceId};

/// A parsed, normalised (lowercase, version `00`) `traceparent`:
/// `00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Traceparent {
    trace_id: TraceId,
    span_id: SpanId,
    flags: u8,
}

/// The `sampled` bit of the trace flags.
const FLAG_SAMPLED: u8 = 0x01;
/// The length of a version-00 value; later versions may append `-<more>` after it.
const V00_LEN: usize = 55;
const RULE: &str =
    "must be 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>, ids not all zero, version not ff";

impl Traceparent {
    /// Parses any valid W3C `traceparent`. Uppercase hex is accepted and normalised to
    /// lowercase (some proxies upper-case header values). Future versions (`01`..`fe`) are
    /// accepted as the spec asks — their first four fields are read and the rest ignored — and
    /// re-emitted as version `00`, the only version we can vouch for.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let err = || IdError::new("traceparent", RULE, s);
        if !s.is_ascii() || s.len() < V00_LEN {
            return Err(err());
        }
        let version = &s[0..2];
        if !is_hex(version) || version.eq_ignore_ascii_case("ff") {
            return Err(err());
        }
        if version == "00" && s.len() != V00_LEN {
            return Err(err());
        }
        if s.len() > V00_LEN && s.as_bytes()[V00_LEN] != b'-' {
            return Err(err());
        }
        let b = s.as_bytes();
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return Err(err());
        }
        let trace_id = TraceId::parse(&s[3..35]).map_err(|_| err())?;
        let span_id = SpanId::parse(&s[36..52]).map_err(|_| err())?;
        let flags_hex = &s[53..55];
        if !is_hex(flags_hex) {
            return Err(err());
        }
        let flags = u8::from_str_radix(flags_hex, 16).map_err(|_| err())?;
        Ok(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// A new root: fresh trace id and span id, sampled (the collector decides what to keep).
    pub fn generate() -> Self {
        Self::from_trace_id(&TraceId::generate())
    }

    /// A root that continues a trace known only by its id (NATS messages from older writers
    /// that carry `trace-id` but no `traceparent`).
    pub fn from_trace_id(trace_id: &TraceId) -> Self {
        Self {
            trace_id: trace_id.clone(),
            span_id: SpanId::generate(),
            flags: FLAG_SAMPLED,
        }
    }

    /// The value to send downstream from a new span of this trace: same trace id and flags,
    /// new span id.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id.clone(),
            span_id: SpanId::generate(),
            flags: self.flags,
        }
    }

    pub fn trace_id(&self) -> &TraceId {
        &self.trace_id
    }

    /// The id of the span that sent this value (the parent of whatever the receiver does).
    pub fn span_id(&self) -> &SpanId {
        &self.span_id
    }

    pub fn flags(&self) -> u8 {
        self.flags
    }

    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }
}

/// What an edge does with an incoming header: a valid value is kept (normalised), a missing
/// or invalid one starts a fresh trace, so downstream hops always get a well-formed value.
pub fn normalize(value: Option<&str>) -> Traceparent {
    value
        .and_then(|v| Traceparent::parse(v.trim()).ok())
        .unwrap_or_else(Traceparent::generate)
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl fmt::Display for Traceparent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

impl fmt::Debug for Traceparent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Traceparent({self})")
    }
}

impl FromStr for Traceparent {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl Serialize for Traceparent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Traceparent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_displays_the_spec_example() {
        let tp = Traceparent::parse(VALID).unwrap();
        assert_eq!(tp.trace_id().as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.span_id().as_str(), "00f067aa0ba902b7");
        assert_eq!(tp.flags(), 1);
        assert!(tp.sampled());
        assert_eq!(tp.to_string(), VALID);
    }

    #[test]
    fn uppercase_is_normalised_to_lowercase() {
        let tp = Traceparent::parse(&VALID.to_ascii_uppercase()).unwrap();
        assert_eq!(tp.to_string(), VALID);
    }

    #[test]
    fn rejects_malformed_values() {
        let zero_trace = format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32));
        let zero_span = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", "0".repeat(16));
        let bad = [
            "",
            "garbage",
            &zero_trace,
            &zero_span,
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01é",
        ];
        for s in bad {
            let err = Traceparent::parse(s).unwrap_err();
            assert_eq!(err.field, "traceparent", "{s}");
        }
    }

    #[test]
    fn future_versions_are_read_and_reemitted_as_00() {
        let v = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        let tp = Traceparent::parse(v).unwrap();
        assert_eq!(tp.to_string(), VALID);
        assert!(
            Traceparent::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x").is_err()
        );
    }

    #[test]
    fn child_keeps_trace_and_flags_but_not_span() {
        let tp =
            Traceparent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        let child = tp.child();
        assert_eq!(child.trace_id(), tp.trace_id());
        assert_ne!(child.span_id(), tp.span_id());
        assert!(!child.sampled());
        assert_eq!(Traceparent::parse(&child.to_string()).unwrap(), child);
    }

    #[test]
    fn generate_and_from_trace_id() {
        let a = Traceparent::generate();
        let b = Traceparent::generate();
        assert_ne!(a.trace_id(), b.trace_id());
        assert_eq!(Traceparent::parse(&a.to_string()).unwrap(), a);
        let tid = TraceId::parse("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let tp = Traceparent::from_trace_id(&tid);
        assert_eq!(tp.trace_id(), &tid);
        assert!(tp.sampled());
    }

    #[test]
    fn normalize_keeps_valid_and_replaces_missing_or_invalid() {
        assert_eq!(normalize(Some(VALID)).to_string(), VALID);
        assert_eq!(
            normalize(Some(&format!(" {} ", VALID.to_uppercase()))).to_string(),
            VALID
        );
        let fresh = normalize(Some("nonsense"));
        assert_ne!(fresh.to_string(), VALID);
        assert!(Traceparent::parse(&fresh.to_string()).is_ok());
        assert!(Traceparent::parse(&normalize(None).to_string()).is_ok());
    }

    #[test]
    fn serde_round_trip_validates() {
        let tp = Traceparent::parse(VALID).unwrap();
        let json = serde_json::to_string(&tp).unwrap();
        assert_eq!(json, format!("\"{VALID}\""));
        assert_eq!(serde_json::from_str::<Traceparent>(&json).unwrap(), tp);
        assert!(serde_json::from_str::<Traceparent>("\"00-bad\"").is_err());
    }
}
