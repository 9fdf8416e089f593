//! Deciding and appending: one command (or batch) against the cached cart, fenced by its
//! version, retried on conflict, answered once per command id.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cart_domain::ids::{CartId, TenantId};
use cart_domain::{
    self as domain, CartState, Command, Context, Event, EventMessage, Limits, Prior, Refusal,
    Refused, Retain,
};
use shared::headers::RequestContext;
use shared::{ApiError, ErrorCode};

use super::{
    CartRef, Carts, Identity, InFlight, Loaded, NEWER_BUILD_RETRY, NO_LEADER_RETRY, Outcome, Route,
};
use crate::metrics as m;
use crate::store::{Appended, StoreError};

impl Carts {
    /// Decide `commands` (atomically, as one message, fenced by the expected version when
    /// given) and append the result. `route: Route::Fallback` serves the cart even when
    /// another node owns its shard (the caller could not reach the owner). The reply is
    /// `render(cart, version)`, made while the cart is at hand: no copy of it leaves the cache.
    pub async fn execute<R>(
        &self,
        ctx: &RequestContext,
        cart: &CartRef,
        route: Route,
        id: Identity,
        (expected_version, mut commands): (Option<u64>, Vec<Command>),
        render: impl Fn(&CartState, u64) -> R,
    ) -> Result<Outcome<R>, ApiError> {
        let _in_flight = InFlight::enter(&self.inner);
        self.check_owner(cart, route)?;
        let started = Instant::now();
        let kind = match commands.as_slice() {
            [one] => one.name(),
            _ => "Batch",
        };
        let result = self
            .execute_inner(ctx, cart, &id, expected_version, &mut commands, &render)
            .await;
        let label = match &result {
            Ok(o) if o.duplicate => "duplicate",
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        self.inner
            .meters
            .commands
            .record(kind, label, started.elapsed().as_secs_f64());
        result
    }

    async fn execute_inner<R>(
        &self,
        ctx: &RequestContext,
        cart: &CartRef,
        id: &Identity,
        expected_version: Option<u64>,
        commands: &mut [Command],
        render: &impl Fn(&CartState, u64) -> R,
    ) -> Result<Outcome<R>, ApiError> {
        let command_id = id.command_id;
        // Inputs from outside the cart are gathered before taking its lock. A refusal to
        // gather them is decided like the cart's own, after the cart was asked whether it
        // answered this command before: a merge retried after its source was ordered is
        // answered as stored.
        let mut not_gathered = None;
        for c in commands.iter_mut() {
            if let Command::MergeCart {
                source_cart_id,
                items,
            } = c
                && items.is_empty()
            {
                // Boxed: rare, and its reads would make every command's future larger.
                match Box::pin(self.merge_items(&cart.tenant, source_cart_id)).await {
                    Ok(gathered) => *items = gathered,
                    Err(e) => {
                        // Boxed: every command's future carries this slot.
                        not_gathered = Some(Box::new(e));
                        break;
                    }
                }
            }
        }
        let mut catalog = cart_domain::catalog::CatalogSnapshot::default();
        for c in commands.iter() {
            let snap = self.inner.catalog.snapshot(&c.catalog_needs()).await?;
            catalog.products.extend(snap.products);
            catalog.deliveries.extend(snap.deliveries);
            catalog.vouchers.extend(snap.vouchers);
        }

        let slot = self.slot(cart).await;
        let mut guard = slot.loaded.lock().await;
        let loaded = self.ensure_current(&slot, &mut guard, cart).await?;
        let cfg = &self.inner.cfg;
        // Whether the state is known to be what the stream's leader holds (an append that the
        // fence let through, or a leader read). A cached or replica-read state may be behind.
        let mut confirmed = false;

        // At least two rounds: a refusal found stale is decided once more.
        for attempt in 0..=cfg.max_conflict_retries.max(1) {
            let now = time::OffsetDateTime::now_utc();
            if let Some(answered) = self.answered_before(&loaded.state, id, now, render)? {
                return Ok(answered);
            }
            if loaded.newer_versions {
                return Err(ApiError::unavailable(
                    "this cart holds events of a newer build that this node cannot read (a \
                     rolling upgrade): it decides no command on what it lacks; retry once the \
                     upgrade is done or a node of the newer build serves the cart",
                )
                .with_retry_after(NEWER_BUILD_RETRY));
            }
            if let Some(expected) = expected_version
                && expected != loaded.state.version
            {
                if expected > loaded.state.version && !confirmed {
                    confirmed = true;
                    let before = loaded.state.version;
                    self.confirm_current(loaded, cart).await?;
                    // What it caught up on may be this very command (stored, its answer
                    // lost, retried here): asked again before anything is refused.
                    if loaded.state.version != before {
                        continue;
                    }
                }
                if expected != loaded.state.version {
                    metrics::counter!(m::CONFLICTS).increment(1);
                    return Err(ApiError::new(
                        ErrorCode::VersionConflict,
                        format!(
                            "expected version {expected}, but the cart is at version {}",
                            loaded.state.version
                        ),
                    ));
                }
            }
            let decided = match &not_gathered {
                // A merge whose source was refused is a refusal like the cart's own.
                Some(refused) => Err(ApiError::clone(refused)),
                None => decide_all(&loaded.state, commands, &catalog, now, cfg.limits),
            };
            // A keyed command's refusal is stored like an outcome (a message without events):
            // its retry gets it again, and a node still deciding the same command (frozen,
            // or slow past the client's patience) finds it when its own append is fenced out,
            // instead of applying what the client was told was refused. An unkeyed command's
            // refusal is not kept when that would take the place of a key.
            let stores_refusal = matches!(&decided, Err(e) if stored_refusal(id, e, cfg.retain))
                && (id.fingerprint.is_some() || !keys_full(&loaded.state, now, cfg.retain));
            // A refusal or a no-op is not fenced by an append: decided on a copy that is behind
            // (a retry whose first attempt was stored but whose answer was lost, a change
            // another node served), it would tell the client something the stream
            // contradicts. Decided again on what the leader holds, when that is newer.
            let unfenced = !stores_refusal
                && decided
                    .as_ref()
                    .map_or(true, |e| e.is_empty() && id.fingerprint.is_none());
            if unfenced && !confirmed {
                confirmed = true;
                let before = loaded.state.version;
                self.confirm_current(loaded, cart).await?;
                if loaded.state.version != before {
                    continue;
                }
            }
            let (mut events, refusal) = match decided {
                Ok(events) => (events, None),
                Err(e) if stores_refusal => (Vec::new(), Some(e)),
                Err(e) => return Err(e),
            };
            // A keyed command that changes nothing is still recorded (a message without
            // events), so its key cannot be used for another request afterwards.
            if events.is_empty() && id.fingerprint.is_none() && refusal.is_none() {
                return Ok(Outcome {
                    reply: render(&loaded.state, loaded.state.version),
                    duplicate: false,
                    event_types: Vec::new(),
                });
            }
            if id.fingerprint.is_some() && keys_full(&loaded.state, now, cfg.retain) {
                return Err(ApiError::new(
                    ErrorCode::LimitExceeded,
                    format!(
                        "this cart holds {} Idempotency-Keys of the last {} s, the most it keeps; send this request without one",
                        CartState::MAX_KEYED,
                        cfg.retain.keyed_secs
                    ),
                ));
            }
            let mut msg = EventMessage::new(
                cart.tenant.clone(),
                cart.cart_id.clone(),
                command_id,
                loaded.state.revision + 1,
                now,
                &events,
            );
            match &refusal {
                Some(e) => {
                    msg.refused = Some(Refused {
                        fingerprint: id.fingerprint.clone(),
                        refusal: Refusal {
                            code: e.code.as_str().to_owned(),
                            message: e.message.clone(),
                        },
                    });
                }
                None => msg.request_fingerprint.clone_from(&id.fingerprint),
            }
            match self.append(cart, &msg, loaded.state.version, ctx).await {
                Ok(appended) if !appended.duplicate => {
                    // Committed: its new lines share product facts with the cached carts.
                    self.inner.products.share_events(&mut events);
                    loaded
                        .state
                        .commit(&msg, &events, appended.sequence, cfg.retain);
                    self.after_commit(cart, loaded);
                    self.reweigh(cart, &slot, &loaded.state).await;
                    if let Some(refused) = refusal {
                        metrics::counter!(m::REFUSALS_STORED, "code" => refused.code.as_str())
                            .increment(1);
                        return Err(refused);
                    }
                    return Ok(Outcome {
                        reply: render(&loaded.state, loaded.state.version),
                        duplicate: false,
                        event_types: events.iter().map(|e| e.type_name().to_owned()).collect(),
                    });
                }
                Ok(appended) => {
                    // Stored before (an earlier attempt whose ack was lost, or another node).
                    self.confirm_current(loaded, cart).await?;
                    return match self.answered_before(&loaded.state, id, now, render)? {
                        Some(answered) => Ok(answered),
                        // The store has it and the cart no longer lists it (more than `recent`
                        // commands since: an answer lost, then a busy cart). Command ids are
                        // made per request (by the gateway, or from the runner's attempt), so
                        // this is that command, applied at the sequence the store names. A
                        // keyed one the cart would still know (its key outlives the store's
                        // duplicate window): another request under a reused id. A stored
                        // refusal is known as long (the retention is at least the window,
                        // checked in `config.rs`), so this is never one.
                        None if appended.sequence <= loaded.state.version => match id.fingerprint {
                            None => Ok(duplicate_reply(&loaded.state, appended.sequence, render)),
                            Some(_) => Err(ApiError::invalid(format!(
                                "command_id {command_id} was already used for a different \
                                 request; send a new id for each request"
                            ))),
                        },
                        None => Err(ApiError::unavailable(
                            "the event store reported a duplicate that is not readable yet; retry",
                        )),
                    };
                }
                Err(StoreError::WrongLastSequence { .. }) => {
                    metrics::counter!(m::CONFLICTS).increment(1);
                    // Another writer is active on this cart (split brain, placement moving).
                    // Back off with jitter so a writer whose cache is current does not win
                    // every race while this one keeps catching up.
                    tokio::time::sleep(conflict_backoff(attempt)).await;
                    self.confirm_current(loaded, cart).await?;
                    confirmed = true;
                }
                Err(StoreError::Timeout) => {
                    return Err(ApiError::new(
                        ErrorCode::Timeout,
                        "the event store did not confirm the append in time; retry with the \
                         same command id (a retry cannot apply twice)",
                    ));
                }
                // Every node would hear the same: the client is told when to retry rather
                // than failed over.
                Err(e @ StoreError::NoLeader) => {
                    return Err(
                        ApiError::unavailable(e.to_string()).with_retry_after(NO_LEADER_RETRY)
                    );
                }
                Err(e) => return Err(ApiError::unavailable(e.to_string())),
            }
        }
        Err(ApiError::new(
            ErrorCode::VersionConflict,
            format!(
                "the cart kept changing concurrently ({} attempts); retry",
                cfg.max_conflict_retries.max(1) + 1
            ),
        ))
    }

    async fn merge_items(
        &self,
        tenant: &TenantId,
        source: &CartId,
    ) -> Result<Vec<domain::AddItem>, ApiError> {
        let source = self.cart_ref(tenant.clone(), source.clone());
        let state = self.read_uncached(&source).await?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        Ok(state.cart.lines_to_merge(now)?)
    }

    async fn append(
        &self,
        cart: &CartRef,
        msg: &EventMessage,
        expected: u64,
        ctx: &RequestContext,
    ) -> Result<Appended, StoreError> {
        let mut attempts = 0;
        loop {
            match self
                .inner
                .store
                .append(&cart.subject, msg, expected, ctx)
                .await
            {
                // An unknown outcome: the same Msg-Id makes a retry safe.
                Err(StoreError::Timeout) if attempts < self.inner.cfg.append_timeout_retries => {
                    attempts += 1;
                    tracing::warn!(cart = %cart.key, attempts, "append timed out; retrying with the same message id");
                }
                other => return other,
            }
        }
    }

    fn after_commit(&self, cart: &CartRef, loaded: &mut Loaded) {
        self.inner.watchers.publish(&cart.key, &loaded.state);
        self.maybe_snapshot(cart, loaded);
    }

    pub(super) fn maybe_snapshot(&self, cart: &CartRef, loaded: &mut Loaded) {
        if loaded.snapshot_due(&self.inner.snapshots) {
            loaded.snapshot_revision = loaded.state.revision;
            self.inner
                .snapshots
                .offer(cart.key.to_string(), Arc::new(loaded.state.clone()));
        }
    }

    /// The original outcome when this command was decided before: a keyed command within
    /// the idempotency retention (refused when its request differs), or one of the cart's
    /// recent commands.
    fn answered_before<R>(
        &self,
        state: &CartState,
        id: &Identity,
        now: time::OffsetDateTime,
        render: &impl Fn(&CartState, u64) -> R,
    ) -> Result<Option<Outcome<R>>, ApiError> {
        let prior = state.prior(
            &id.command_id,
            id.fingerprint.as_deref(),
            now.unix_timestamp(),
            self.inner.cfg.retain,
        );
        match prior {
            Prior::New => Ok(None),
            Prior::Answered(version) => Ok(Some(duplicate_reply(state, version, render))),
            Prior::Refused(refusal) => {
                metrics::counter!(m::DUPLICATES).increment(1);
                let code = ErrorCode::parse(&refusal.code).unwrap_or(ErrorCode::InvalidState);
                Err(ApiError::new(code, refusal.message.clone()).replayed())
            }
            Prior::KeyReused => Err(ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was already used on this cart for a different request; \
                 use a new key for each distinct request",
            )),
        }
    }
}

/// The answer to a command applied before: the original outcome's version, with the cart as
/// it is now (later commands may have changed it since).
fn duplicate_reply<R>(
    state: &CartState,
    version: u64,
    render: &impl Fn(&CartState, u64) -> R,
) -> Outcome<R> {
    metrics::counter!(m::DUPLICATES).increment(1);
    Outcome {
        reply: render(state, version.max(1)),
        duplicate: true,
        event_types: Vec::new(),
    }
}

/// Whether the refusal `e` of command `id` is stored with the cart: the cart's refusal (not a
/// transient failure, which a retry may get past) of a keyed command, or of one an earlier
/// attempt of which may still be decided elsewhere; while keys are kept at all.
fn stored_refusal(id: &Identity, e: &ApiError, retain: Retain) -> bool {
    (id.fingerprint.is_some() || id.earlier_attempt_unknown)
        && retain.keyed_secs > 0
        && !e.code.retry_safe()
}

/// Whether `state` holds as many keys (and kept refusals) as a cart may at `now`: counted
/// only for a keyed command or a refusal, not for every command.
fn keys_full(state: &CartState, now: time::OffsetDateTime, retain: Retain) -> bool {
    state.keyed_live(now.unix_timestamp(), retain) >= CartState::MAX_KEYED
}

/// Random delay of up to 2^attempt ms, capped at 16 ms.
fn conflict_backoff(attempt: u32) -> Duration {
    let cap_ms = 1u64 << attempt.min(4);
    Duration::from_micros(fastrand::u64(0..cap_ms * 1000))
}

fn decide_all(
    state: &CartState,
    commands: &[Command],
    catalog: &cart_domain::catalog::CatalogSnapshot,
    now: time::OffsetDateTime,
    limits: Limits,
) -> Result<Vec<Event>, ApiError> {
    let ctx = Context {
        now,
        catalog,
        limits,
    };
    // One command (nearly every call) is decided on the cart itself: no working copy.
    if let [one] = commands {
        return domain::decide(&state.cart, one.clone(), &ctx).map_err(ApiError::from);
    }
    let mut work = state.cart.clone();
    let mut all = Vec::new();
    for (i, c) in commands.iter().enumerate() {
        let name = c.name();
        let events = domain::decide(&work, c.clone(), &ctx).map_err(|e| {
            let mut err = ApiError::from(e);
            err.message = format!("commands[{i}] ({name}): {}", err.message);
            err
        })?;
        for e in &events {
            domain::apply(&mut work, e);
        }
        all.extend(events);
    }
    Ok(all)
}
