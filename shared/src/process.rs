//! What every process reports about itself on `/metrics`: which build it runs
//! (`cart_build_info`) and what it costs the machine (the standard `process_*` series).
//!
//! [`crate::telemetry::init`] records the build info once per service; the `/metrics` handler
//! ([`crate::ops`]) calls [`collect`] before each render, so the process series are as fresh as
//! the scrape and nothing samples them in between. The process series come from the
//! `metrics-process` crate (on Linux it reads `/proc/self`) under the names Prometheus' own
//! client libraries use, so existing dashboards and queries for them work unchanged.

use std::sync::OnceLock;

use crate::metrics::BUILD_INFO;

/// The version every crate of the workspace shares (`version.workspace`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit the binary was built from (`shared/build.rs`: the `GIT_SHA` build variable,
/// `git rev-parse`, or `unknown`).
pub const GIT_SHA: &str = env!("CART_GIT_SHA");

/// Sets `cart_build_info{service, version, git_sha}` to 1. A constant series: join it to
/// others (`* on (instance) group_left (version) cart_build_info`) to see which build is
/// misbehaving, or count the versions running during a rollout.
pub fn record_build_info(service: &str) {
    metrics::describe_gauge!(
        BUILD_INFO,
        "Always 1: the service, its version and the commit it was built from, as labels."
    );
    metrics::gauge!(
        BUILD_INFO,
        "service" => service.to_owned(),
        "version" => VERSION,
        "git_sha" => GIT_SHA,
    )
    .set(1.0);
}

static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();

/// Reads this process's CPU time, memory, open file descriptors, threads and start time into
/// the recorder (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_open_fds`, `process_start_time_seconds`, ...). Cheap (a few reads of `/proc`);
/// called on every scrape. A series the platform cannot read is left out, never an error.
pub fn collect() {
    COLLECTOR
        .get_or_init(|| {
            let collector = metrics_process::Collector::default();
            collector.describe();
            collector
        })
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{
        PROCESS_CPU_SECONDS, PROCESS_OPEN_FDS, PROCESS_RESIDENT_MEMORY, PROCESS_START_TIME,
    };

    /// The value of the series `name` (no labels) in Prometheus text.
    fn value(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn build_info_names_the_service_version_and_commit() {
        let handle = crate::telemetry::prometheus();
        record_build_info("process-test");
        let text = handle.render();
        let want = format!(
            "cart_build_info{{service=\"process-test\",version=\"{VERSION}\",git_sha=\"{GIT_SHA}\"}} 1"
        );
        assert!(text.contains(&want), "no {want} in\n{text}");
        assert!(!GIT_SHA.is_empty(), "a sha or `unknown`, never empty");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_series_are_read_on_collect() {
        let handle = crate::telemetry::prometheus();
        collect();
        let text = handle.render();
        let rss = value(&text, PROCESS_RESIDENT_MEMORY).expect("resident memory");
        assert!(
            rss > 1_000_000.0,
            "a test process holds more than 1 MB: {rss}"
        );
        let fds = value(&text, PROCESS_OPEN_FDS).expect("open fds");
        assert!(fds >= 3.0, "stdin, stdout, stderr at least: {fds}");
        let started = value(&text, PROCESS_START_TIME).expect("start time");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            started > now - 3_600.0 && started <= now + 1.0,
            "started {started}, now {now}"
        );
        assert!(value(&text, PROCESS_CPU_SECONDS).is_some(), "{text}");
    }
}
