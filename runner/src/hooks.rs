//! Test hooks: fault injection at the runner's worst moments (around the provider call, the
//! lease's refresh) and where a reload reads from. All empty in production.

use std::sync::Arc;

use futures::future::BoxFuture;

/// A hook given an attempt id.
pub type AttemptHook = Arc<dyn Fn(String) -> BoxFuture<'static, ()> + Send + Sync>;

/// Test hooks (fault injection); all empty in production.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Runs right after the provider call returned, before its result is recorded. A hook
    /// that never completes, followed by aborting the runner, is a crash at the worst moment.
    pub after_provider_call: Option<AttemptHook>,
    /// Runs right before the provider call (given the attempt id), before the lease is
    /// checked for it.
    pub before_provider_call: Option<AttemptHook>,
    /// Replaces where `Reload` reads the provider configuration from.
    pub reload: Option<crate::provider::ReloadSource>,
    /// Runs before each refresh of the lease ([`crate::lease::RefreshHook`]).
    pub before_lease_refresh: Option<crate::lease::RefreshHook>,
}
