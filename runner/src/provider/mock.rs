//! A mock payment provider with the Klarna Checkout v3 HTTP shape, for dev and tests.
//!
//! It validates basic auth and amounts like the real API, honours `Klarna-Idempotency-Key`,
//! counts the orders created per merchant reference (the cart id and the attempt id), and can be
//! told to fail (transiently or permanently), to be slow, or to complete an order as a shopper
//! would — which asks the order's validation callback first (a `303` refuses the purchase) and
//! then calls its push URL. `POST /__mock/orders/{id}/complete?validate=false` pays without
//! the validation (the race it cannot close). Acknowledged and cancelled orders are counted.
//! Control routes live under `/__mock/`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::provider_order::PAID_STATUS;

use super::order::Order;

/// What the mock should do with the next requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Answer the next N API requests with 503.
    pub fail_next: u32,
    /// Answer those requests with 502 and this raw body instead (e.g. a proxy's HTML page).
    pub fail_body: Option<String>,
    /// Refuse every order create/update with 400 (a permanent failure).
    pub refuse: bool,
    /// Delay every API request by this long (longer than the client timeout = a timeout).
    pub delay_ms: u64,
}

#[derive(Default)]
struct Store {
    orders: HashMap<String, Order>,
    by_idempotency_key: HashMap<String, String>,
    created_per_reference: HashMap<String, u32>,
    acknowledged: HashSet<String>,
    cancelled: HashSet<String>,
    cancel_requests: u32,
    faults: Faults,
    api_requests: u64,
}

#[derive(Clone)]
pub struct MockProvider {
    store: Arc<Mutex<Store>>,
    username: String,
    password: String,
    http: reqwest::Client,
}

/// Counters for tests and the dev console.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stats {
    pub orders: usize,
    pub api_requests: u64,
    pub created_per_reference: HashMap<String, u32>,
    pub acknowledged: Vec<String>,
    pub cancelled: Vec<String>,
    /// Cancel requests received, refused ones (already cancelled) included.
    pub cancel_requests: u32,
}

/// Why the mock did not complete an order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompleteError {
    #[error("no order {0}")]
    NoSuchOrder(String),
    /// The merchant's validation callback refused the purchase (`303` to `location`), or did
    /// not answer while the order requires a successful validation.
    #[error("the merchant's validation refused the purchase: {0}")]
    Refused(String),
    #[error("{0}")]
    Push(String),
}

impl MockProvider {
    pub fn new(username: &str, password: &str) -> Self {
        Self {
            store: Arc::default(),
            username: username.to_owned(),
            password: password.to_owned(),
            // Redirects are answers here (a validation refusal is a 303), never followed.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("http client"),
        }
    }

    /// Serve on `addr` (port 0 for a free one) until `shutdown`; returns the bound address.
    pub async fn serve(
        &self,
        addr: &str,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let app = self.router();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
        });
        Ok((bound, task))
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/checkout/v3/orders", post(create))
            .route("/checkout/v3/orders/{id}", get(read).post(update))
            .route(
                "/ordermanagement/v1/orders/{id}/acknowledge",
                post(acknowledge),
            )
            .route("/ordermanagement/v1/orders/{id}/cancel", post(cancel))
            .route("/__mock/orders/{id}/complete", post(complete_route))
            .route("/__mock/faults", post(set_faults_route))
            .route("/__mock/stats", get(stats_route))
            .layer(axum::middleware::from_fn(super::mock_trace::span))
            .with_state(self.clone())
    }

    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    pub fn stats(&self) -> Stats {
        let s = self.lock();
        Stats {
            orders: s.orders.len(),
            api_requests: s.api_requests,
            created_per_reference: s.created_per_reference.clone(),
            acknowledged: s.acknowledged.iter().cloned().collect(),
            cancelled: s.cancelled.iter().cloned().collect(),
            cancel_requests: s.cancel_requests,
        }
    }

    /// Orders created for a merchant reference (cart id or attempt id).
    pub fn orders_for(&self, reference: &str) -> u32 {
        self.lock()
            .created_per_reference
            .get(reference)
            .copied()
            .unwrap_or(0)
    }

    pub fn order(&self, id: &str) -> Option<Order> {
        self.lock().orders.get(id).cloned()
    }

    /// The provider forgets an order (left unpaid past its lifetime): `404` from now on.
    pub fn expire(&self, id: &str) -> bool {
        self.lock().orders.remove(id).is_some()
    }

    /// The shopper completes payment (without a push; see [`MockProvider::complete`]).
    pub fn mark_complete(&self, id: &str) -> Result<(), String> {
        let mut s = self.lock();
        let order = s
            .orders
            .get_mut(id)
            .ok_or_else(|| format!("no order {id}"))?;
        order.status = Some(PAID_STATUS.into());
        order.html_snippet = Some(snippet(id, PAID_STATUS));
        Ok(())
    }

    /// The shopper clicks "buy": the provider asks the merchant's validation callback first
    /// (when the order has one), then completes the order and calls its push URL. Returns the
    /// push's HTTP status.
    pub async fn complete(&self, id: &str) -> Result<u16, CompleteError> {
        self.validate(id).await?;
        self.complete_unvalidated(id).await
    }

    /// The shopper pays without the validation callback being asked (a cart changed between
    /// validation and completion, or a provider that does not validate): complete and push.
    pub async fn complete_unvalidated(&self, id: &str) -> Result<u16, CompleteError> {
        self.mark_complete(id)
            .map_err(|_| CompleteError::NoSuchOrder(id.into()))?;
        let push = {
            let s = self.lock();
            s.orders[id]
                .merchant_urls
                .as_ref()
                .map(|u| u.push.replace("{checkout.order.id}", id))
                .ok_or_else(|| CompleteError::Push("the order has no push URL".into()))?
        };
        let resp = self
            .http
            .post(&push)
            .headers(super::mock_trace::headers())
            .send()
            .await
            .map_err(|e| CompleteError::Push(format!("push to {push} failed: {e}")))?;
        Ok(resp.status().as_u16())
    }

    /// Klarna's validation callback: the order as JSON to `merchant_urls.validation`. `200`
    /// approves; `303` refuses (the shopper is sent to its `Location`); with
    /// `require_validate_callback_success`, anything else refuses too.
    pub async fn validate(&self, id: &str) -> Result<(), CompleteError> {
        let order = self
            .order(id)
            .ok_or_else(|| CompleteError::NoSuchOrder(id.into()))?;
        let Some(url) = order
            .merchant_urls
            .as_ref()
            .and_then(|u| u.validation.as_ref())
            .map(|v| v.replace("{checkout.order.id}", id))
        else {
            return Ok(());
        };
        let required = order
            .options
            .as_ref()
            .is_some_and(|o| o.require_validate_callback_success);
        let answer = self.http.post(&url).headers(super::mock_trace::headers());
        let answer = answer.json(&order).send().await;
        match answer {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) if r.status() == reqwest::StatusCode::SEE_OTHER => {
                let location = r
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                Err(CompleteError::Refused(format!("303 to {location}")))
            }
            Ok(r) if required => Err(CompleteError::Refused(format!(
                "the callback answered {}",
                r.status()
            ))),
            Err(e) if required => Err(CompleteError::Refused(format!("the callback failed: {e}"))),
            _ => Ok(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store, to create or update `order`: its amounts must add up, and no permanent
    /// refusal be injected (else the error answer).
    fn lock_for_write(&self, order: &Order) -> Result<MutexGuard<'_, Store>, Box<Response>> {
        if let Err(msg) = order.check_amounts() {
            return Err(Box::new(error(StatusCode::BAD_REQUEST, "BAD_VALUE", &msg)));
        }
        let s = self.lock();
        if s.faults.refuse {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "REJECTED",
                "injected permanent refusal",
            )));
        }
        Ok(s)
    }

    /// Auth, request counting and injected faults shared by every API route.
    async fn gate(&self, headers: &HeaderMap) -> Result<(), Response> {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", self.username, self.password))
        );
        if headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            != Some(expected.as_str())
        {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "bad credentials",
            ));
        }
        let delay = {
            let mut s = self.lock();
            s.api_requests += 1;
            if s.faults.fail_next > 0 {
                s.faults.fail_next -= 1;
                if let Some(body) = &s.faults.fail_body {
                    return Err((
                        StatusCode::BAD_GATEWAY,
                        [(header::CONTENT_TYPE, "text/html")],
                        body.clone(),
                    )
                        .into_response());
                }
                return Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "TEMPORARY_ERROR",
                    "injected transient failure",
                ));
            }
            s.faults.delay_ms
        };
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        Ok(())
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error_code": code, "error_messages": [message], "correlation_id": uuid::Uuid::new_v4().to_string()})),
    )
        .into_response()
}

fn no_such_order() -> Response {
    error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such order")
}

/// An API request past [`MockProvider::gate`] (auth, request counting, injected faults),
/// checked before the route reads its body.
struct Gated;

impl FromRequestParts<MockProvider> for Gated {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, m: &MockProvider) -> Result<Self, Response> {
        m.gate(&parts.headers).await.map(|()| Gated)
    }
}

fn snippet(id: &str, status: &str) -> String {
    format!(
        "<div id=\"klarna-checkout-container\" data-order-id=\"{id}\" data-status=\"{status}\">\
         <script>/* mock Klarna Checkout for order {id} */</script></div>"
    )
}

async fn create(
    State(m): State<MockProvider>,
    _: Gated,
    headers: HeaderMap,
    Json(mut order): Json<Order>,
) -> Response {
    let key = headers
        .get("Klarna-Idempotency-Key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut s = match m.lock_for_write(&order) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if let Some(existing) = key
        .as_ref()
        .and_then(|k| s.by_idempotency_key.get(k))
        .cloned()
    {
        let order = s.orders[&existing].clone();
        return (StatusCode::OK, Json(order)).into_response();
    }
    let id = uuid::Uuid::new_v4().to_string();
    order.order_id = Some(id.clone());
    order.status = Some("checkout_incomplete".into());
    order.html_snippet = Some(snippet(&id, "checkout_incomplete"));
    order.klarna_reference = Some(id[..8].to_ascii_uppercase());
    for r in [&order.merchant_reference1, &order.merchant_reference2]
        .into_iter()
        .flatten()
    {
        *s.created_per_reference.entry(r.clone()).or_default() += 1;
    }
    if let Some(k) = key {
        s.by_idempotency_key.insert(k, id.clone());
    }
    s.orders.insert(id, order.clone());
    (StatusCode::CREATED, Json(order)).into_response()
}

async fn read(State(m): State<MockProvider>, _: Gated, Path(id): Path<String>) -> Response {
    match m.order(&id) {
        Some(o) => Json(o).into_response(),
        None => no_such_order(),
    }
}

async fn update(
    State(m): State<MockProvider>,
    _: Gated,
    Path(id): Path<String>,
    Json(changes): Json<Order>,
) -> Response {
    let mut s = match m.lock_for_write(&changes) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Some(order) = s.orders.get_mut(&id) else {
        return no_such_order();
    };
    if order.status.as_deref() != Some("checkout_incomplete") {
        return error(
            StatusCode::BAD_REQUEST,
            "READ_ONLY_ORDER",
            "the order is completed and cannot change",
        );
    }
    order.order_amount = changes.order_amount;
    order.order_tax_amount = changes.order_tax_amount;
    order.order_lines = changes.order_lines;
    order.purchase_currency = changes.purchase_currency;
    order.purchase_country = changes.purchase_country;
    // What an update carries replaces the order's (its URLs and options too).
    order.merchant_reference2 = changes
        .merchant_reference2
        .or(order.merchant_reference2.take());
    order.merchant_data = changes.merchant_data.or(order.merchant_data.take());
    order.merchant_urls = changes.merchant_urls.or(order.merchant_urls.take());
    order.options = changes.options.or(order.options.take());
    Json(order.clone()).into_response()
}

async fn acknowledge(State(m): State<MockProvider>, _: Gated, Path(id): Path<String>) -> Response {
    let mut s = m.lock();
    if !s.orders.contains_key(&id) {
        return no_such_order();
    }
    s.acknowledged.insert(id);
    StatusCode::NO_CONTENT.into_response()
}

async fn cancel(State(m): State<MockProvider>, _: Gated, Path(id): Path<String>) -> Response {
    let mut s = m.lock();
    s.cancel_requests += 1;
    if !s.orders.contains_key(&id) {
        return no_such_order();
    }
    if !s.cancelled.insert(id) {
        return error(
            StatusCode::FORBIDDEN,
            "NOT_ALLOWED",
            "the order is already cancelled",
        );
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Query of `/__mock/orders/{id}/complete`.
#[derive(Deserialize)]
struct CompleteQuery {
    /// `false`: pay without asking the validation callback (default `true`).
    validate: Option<bool>,
}

async fn complete_route(
    State(m): State<MockProvider>,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<CompleteQuery>,
) -> Response {
    let done = if q.validate.unwrap_or(true) {
        m.complete(&id).await
    } else {
        m.complete_unvalidated(&id).await
    };
    match done {
        Ok(push_status) => {
            Json(json!({"order_id": id, "status": PAID_STATUS, "push_status": push_status}))
                .into_response()
        }
        Err(e @ CompleteError::Refused(_)) => {
            error(StatusCode::CONFLICT, "VALIDATION_REFUSED", &e.to_string())
        }
        Err(e @ CompleteError::NoSuchOrder(_)) => {
            error(StatusCode::NOT_FOUND, "NOT_FOUND", &e.to_string())
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, "PUSH_FAILED", &e.to_string()),
    }
}

async fn set_faults_route(State(m): State<MockProvider>, Json(f): Json<Faults>) -> Response {
    m.set_faults(f.clone());
    Json(f).into_response()
}

async fn stats_route(State(m): State<MockProvider>) -> Response {
    Json(m.stats()).into_response()
}
