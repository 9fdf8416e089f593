//! Is an existing stream, KV bucket or consumer compatible with what we need?
//!
//! Services never delete or destructively change a resource they find (it may hold the only
//! copy of the data, or belong to a newer version of the platform). Instead they compare it
//! with the policy and refuse to start with an error that names the resource, the field and
//! both values, so an operator can fix it with the `nats` CLI. Pure functions: tested without
//! a server.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::{consumer, kv, stream};

/// One field of an existing resource that does not fit the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMismatch {
    pub field: &'static str,
    pub actual: String,
    pub expected: String,
}

impl fmt::Display for FieldMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "field {} is {}, expected {}",
            self.field, self.actual, self.expected
        )
    }
}

/// An existing resource is incompatible; lists every mismatching field.
/// Displays as `stream CART_EVENTS: field discard is Old, expected New; ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    /// `stream`, `kv bucket` or `consumer`.
    pub kind: &'static str,
    pub name: String,
    pub mismatches: Vec<FieldMismatch>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: ", self.kind, self.name)?;
        for (i, m) in self.mismatches.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{m}")?;
        }
        Ok(())
    }
}

struct Check(Vec<FieldMismatch>);

impl Check {
    fn fail(&mut self, field: &'static str, actual: impl fmt::Debug, expected: impl Into<String>) {
        self.0.push(FieldMismatch {
            field,
            actual: format!("{actual:?}"),
            expected: expected.into(),
        });
    }

    fn eq<T: PartialEq + fmt::Debug>(&mut self, field: &'static str, actual: &T, expected: &T) {
        if actual != expected {
            self.fail(field, actual, format!("{expected:?}"));
        }
    }

    fn required_flag(&mut self, field: &'static str, actual: bool, expected: bool) {
        if expected && !actual {
            self.fail(field, actual, "true");
        }
    }

    fn finish(self, kind: &'static str, name: &str) -> Result<(), ValidationError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                kind,
                name: name.to_owned(),
                mismatches: self.0,
            })
        }
    }
}

/// True when subject pattern `pattern` matches every subject `subject` can match (tokens,
/// `*` for one token, `>` for one or more trailing tokens).
pub fn subject_covers(pattern: &str, subject: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let s: Vec<&str> = subject.split('.').collect();
    for (i, pt) in p.iter().enumerate() {
        if *pt == ">" {
            return s.len() > i;
        }
        let Some(st) = s.get(i) else { return false };
        match *pt {
            "*" if *st == ">" => return false,
            "*" => {}
            _ if pt != st => return false,
            _ => {}
        }
    }
    p.len() == s.len()
}

/// How the age limit of an existing resource is judged.
#[derive(Clone, Copy)]
enum AgeRule {
    /// Streams: unlimited stays unlimited (nothing ages out that we did not plan for);
    /// a planned limit may be longer or unlimited.
    AtLeast,
    /// KV TTLs carry meaning (node liveness): must be exactly the configured value.
    Exactly,
}

fn limit_at_least(c: &mut Check, field: &'static str, actual: i64, expected: i64) {
    if expected > 0 && actual > 0 && actual < expected {
        c.fail(field, actual, format!("at least {expected} (or unlimited)"));
    }
}

fn fmt_age(d: Duration) -> String {
    if d.is_zero() {
        "unlimited".into()
    } else {
        format!("{d:?}")
    }
}

fn check_stream(
    expected: &stream::Config,
    actual: &stream::Config,
    age: AgeRule,
    history_field: &'static str,
    age_field: &'static str,
) -> Check {
    let mut c = Check(Vec::new());
    for want in &expected.subjects {
        if !actual
            .subjects
            .iter()
            .any(|have| subject_covers(have, want))
        {
            c.fail("subjects", &actual.subjects, format!("to include {want:?}"));
        }
    }
    c.eq("storage", &actual.storage, &expected.storage);
    c.eq("retention", &actual.retention, &expected.retention);
    c.eq("discard", &actual.discard, &expected.discard);
    if actual.num_replicas < expected.num_replicas {
        c.fail(
            "num_replicas",
            actual.num_replicas,
            format!("at least {}", expected.num_replicas),
        );
    }
    if actual.duplicate_window < expected.duplicate_window {
        c.fail(
            "duplicate_window",
            actual.duplicate_window,
            format!("at least {:?}", expected.duplicate_window),
        );
    }
    c.required_flag("allow_direct", actual.allow_direct, expected.allow_direct);
    c.required_flag("deny_delete", actual.deny_delete, expected.deny_delete);
    c.required_flag("deny_purge", actual.deny_purge, expected.deny_purge);
    match age {
        AgeRule::Exactly if actual.max_age != expected.max_age => {
            c.fail(age_field, actual.max_age, fmt_age(expected.max_age));
        }
        AgeRule::AtLeast if expected.max_age.is_zero() && !actual.max_age.is_zero() => {
            c.fail(age_field, actual.max_age, "unlimited");
        }
        AgeRule::AtLeast if !actual.max_age.is_zero() && actual.max_age < expected.max_age => {
            c.fail(
                age_field,
                actual.max_age,
                format!("at least {:?} (or unlimited)", expected.max_age),
            );
        }
        _ => {}
    }
    // A per-subject limit silently drops a subject's oldest messages: fatal for an event
    // stream, and for a KV it is the history we rely on.
    let (want, have) = (
        expected.max_messages_per_subject,
        actual.max_messages_per_subject,
    );
    if want <= 0 && have > 0 {
        c.fail(history_field, have, "unlimited");
    } else if want > 0 && have > 0 && have < want {
        c.fail(history_field, have, format!("at least {want}"));
    }
    limit_at_least(&mut c, "max_bytes", actual.max_bytes, expected.max_bytes);
    limit_at_least(
        &mut c,
        "max_msgs",
        actual.max_messages,
        expected.max_messages,
    );
    c
}

/// Checks an existing stream against the policy `expected`: required subjects present
/// (a superset is fine), same storage, retention and discard policy, replicas and duplicate
/// window not below the policy, the flags we rely on set, and no limit that would drop
/// messages the policy keeps.
pub fn validate_stream(
    expected: &stream::Config,
    actual: &stream::Config,
) -> Result<(), ValidationError> {
    check_stream(
        expected,
        actual,
        AgeRule::AtLeast,
        "max_msgs_per_subject",
        "max_age",
    )
    .finish("stream", &expected.name)
}

/// Checks the stream behind an existing KV bucket against the bucket policy: as for streams,
/// plus history at least the policy's and a TTL equal to it (for `CART_NODES` the TTL is the
/// liveness timeout, so longer is as wrong as shorter).
pub fn validate_kv(expected: &kv::Config, actual: &stream::Config) -> Result<(), ValidationError> {
    let want = super::policies::kv_stream(expected);
    let mut c = check_stream(&want, actual, AgeRule::Exactly, "history", "ttl");
    if actual.max_messages_per_subject < 1 {
        c.fail(
            "history",
            actual.max_messages_per_subject,
            "at least 1 (a KV bucket)",
        );
    }
    c.finish("kv bucket", &expected.bucket)
}

/// What [`validate_consumer`] found about an existing durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerCheck {
    UpToDate,
    /// Only fields the server can change in place differ (listed, for the log).
    NeedsUpdate(Vec<FieldMismatch>),
}

/// The filter of a consumer config as a sorted set (single or multiple filter form).
fn filters(filter_subject: &str, filter_subjects: &[String]) -> Vec<String> {
    let mut f: Vec<String> = filter_subjects.to_vec();
    if !filter_subject.is_empty() {
        f.push(filter_subject.to_owned());
    }
    f.sort();
    f.dedup();
    f
}

/// Checks an existing durable against the wanted pull consumer. A different filter, ack policy
/// or a push consumer of the same name is an error (changing them would silently skip or
/// replay messages); `ack_wait`, `max_deliver` and `max_ack_pending` are tuning and may be
/// updated in place.
pub fn validate_consumer(
    expected: &consumer::pull::Config,
    actual: &consumer::Config,
) -> Result<ConsumerCheck, ValidationError> {
    let name = expected.durable_name.clone().unwrap_or_default();
    let mut c = Check(Vec::new());
    if let Some(deliver) = &actual.deliver_subject {
        c.fail("deliver_subject", deliver, "none (a pull consumer)");
    }
    c.eq("ack_policy", &actual.ack_policy, &expected.ack_policy);
    let want = filters(&expected.filter_subject, &expected.filter_subjects);
    let have = filters(&actual.filter_subject, &actual.filter_subjects);
    if want != have {
        c.fail("filter_subjects", have, format!("{want:?}"));
    }
    c.eq("headers_only", &actual.headers_only, &expected.headers_only);
    c.finish("consumer", &name)?;

    let mut u = Check(Vec::new());
    u.eq("ack_wait", &actual.ack_wait, &expected.ack_wait);
    u.eq("max_deliver", &actual.max_deliver, &expected.max_deliver);
    u.eq(
        "max_ack_pending",
        &actual.max_ack_pending,
        &expected.max_ack_pending,
    );
    Ok(if u.0.is_empty() {
        ConsumerCheck::UpToDate
    } else {
        ConsumerCheck::NeedsUpdate(u.0)
    })
}

#[cfg(test)]
mod tests;
