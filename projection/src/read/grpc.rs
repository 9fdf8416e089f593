//! `projection.v1.QueryService`: validate the request (tenant first), one call into the
//! queries or the writer, map the rows. Every error leaves as a status with its stable code.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::Stream;
use cart_domain::ids::{CartId, TenantId};
use proto::projection::v1 as pb;
use rusqlite::Connection;
use shared::ApiError;
use shared::grpc_tls::names::{ADMIN, GATEWAY};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tonic::{Request, Response, Status};

use crate::consume::dead_letter_stream;
use crate::error::ProjectionError;
use crate::metrics as m;
use crate::read::page::{self, Cursor, Listing};
use crate::read::pool::Readers;
use crate::read::queries::{self, CartFilter, CartRow, OrderRow, Page, StatusFilter};
use crate::status::ProjectionStatus;
use crate::store::poison_table::{self, PoisonRecord};
use crate::write::views::nanos;
use crate::write::writer::Writer;

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 1_000;

#[derive(Clone)]
pub struct QueryGrpc {
    pub readers: Readers,
    pub writer: Writer,
    pub events: Stream,
    pub shared: Arc<ProjectionStatus>,
    pub abandoned_after: Duration,
    pub request_timeout: Duration,
}

type Reply<T> = Result<Response<T>, Status>;

/// The request's tenant: required, valid, and equal to `x-tenant-id` when that is sent.
fn tenant(md: &tonic::metadata::MetadataMap, raw: &str) -> Result<TenantId, ProjectionError> {
    if raw.is_empty() {
        return Err(ProjectionError::Invalid("tenant is required".into()));
    }
    let tenant = TenantId::parse(raw).map_err(|e| ProjectionError::Invalid(e.to_string()))?;
    if let Some(header) = md.get(shared::headers::TENANT_ID)
        && header.to_str().ok() != Some(tenant.as_str())
    {
        return Err(ProjectionError::Forbidden(format!(
            "tenant {raw:?} does not match the {} header",
            shared::headers::TENANT_ID
        )));
    }
    Ok(tenant)
}

/// A user id to filter by, no longer than a cart's user id may be.
fn user_filter(raw: Option<&str>) -> Result<Option<String>, ProjectionError> {
    let max = cart_domain::Limits::default().max_text_len;
    match raw.filter(|u| !u.is_empty()) {
        Some(u) if u.chars().count() > max => Err(ProjectionError::Invalid(format!(
            "user_id must be at most {max} characters"
        ))),
        u => Ok(u.map(str::to_owned)),
    }
}

fn time_arg(field: &str, raw: Option<&str>) -> Result<Option<i64>, ProjectionError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => OffsetDateTime::parse(s, &Rfc3339)
            .map(|t| Some(nanos(t)))
            .map_err(|e| {
                ProjectionError::Invalid(format!(
                    "{field} must be an RFC 3339 time, got {:?}: {e}",
                    shared::error::clip(s)
                ))
            }),
    }
}

fn rfc3339(ns: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn limit(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    }
}

impl QueryGrpc {
    /// Carts updated at or before this are abandoned (when open with items).
    fn abandoned_before(&self, idle: Duration) -> i64 {
        let idle = i64::try_from(idle.as_nanos()).unwrap_or(i64::MAX);
        nanos(OffsetDateTime::now_utc()).saturating_sub(idle)
    }

    fn observe<T>(&self, method: &'static str, r: Result<T, ProjectionError>) -> Reply<T> {
        let (code, result) = match r {
            Ok(v) => ("ok", Ok(Response::new(v))),
            Err(e) => {
                let api = ApiError::from(e);
                (api.code.as_str(), Err(api.to_status()))
            }
        };
        metrics::counter!(m::QUERIES, m::VIEW => self.shared.view.clone(), "method" => method, "code" => code)
            .increment(1);
        result
    }

    /// Serves `rpc` (`QueryService.<Method>`) to the callers in `allowed`: checks the caller,
    /// then runs `work` and counts its outcome under the method's name.
    async fn serve<Req, T>(
        &self,
        req: &Request<Req>,
        rpc: &'static str,
        allowed: &[&str],
        work: impl Future<Output = Result<T, ProjectionError>>,
    ) -> Reply<T> {
        shared::grpc_tls::authorize(req, rpc, allowed)?;
        self.observe(rpc.trim_start_matches("QueryService."), work.await)
    }

    async fn list(
        &self,
        tenant: TenantId,
        filter: CartFilter,
        before_ns: i64,
        size: u32,
        listing: Listing,
        token: &str,
    ) -> Result<pb::ListCartsResponse, ProjectionError> {
        let (rows, next_page_token) = self
            .page(listing, size, token, move |c, size, after| {
                queries::list_carts(c, tenant.as_str(), &filter, before_ns, size, after)
            })
            .await?;
        Ok(pb::ListCartsResponse {
            carts: rows.into_iter().map(cart_record).collect(),
            next_page_token,
        })
    }

    /// One page of `listing` as a request asks for it (`size`, `token`): `query` reads it with
    /// the page size and the cursor to start after. Returns its rows and the next page's token
    /// (empty after the last page).
    async fn page<T: Send + 'static>(
        &self,
        listing: Listing,
        size: u32,
        token: &str,
        query: impl FnOnce(&Connection, u32, Option<&Cursor>) -> Result<Page<T>, ProjectionError>
        + Send
        + 'static,
    ) -> Result<(Vec<T>, String), ProjectionError> {
        let size = page::size(size);
        let after = page::decode(listing, token)?;
        let page = self
            .readers
            .with(move |c| query(c, size, after.as_ref()))
            .await?;
        let next = page.next.map(|c| page::encode(listing, &c));
        Ok((page.rows, next.unwrap_or_default()))
    }

    async fn replay(&self, id: u64) -> Result<pb::ReplayDeadLetterResponse, ProjectionError> {
        if id == 0 {
            return Err(ProjectionError::Invalid("id is required".into()));
        }
        let record = self
            .readers
            .with(move |c| poison_table::get(c, id))
            .await?
            .ok_or_else(|| ProjectionError::NotFound(format!("no dead letter with id {id}")))?;
        let message =
            dead_letter_stream::read_original(&self.events, &record, self.request_timeout).await?;
        let outcome = self.writer.replay(id, message).await?;
        let result = if outcome.applied { "applied" } else { "failed" };
        metrics::counter!(m::REPLAYS, m::VIEW => self.shared.view.clone(), "result" => result)
            .increment(1);
        tracing::info!(id, sequence = record.stream_sequence, applied = outcome.applied, error = ?outcome.error, "dead letter replayed");
        Ok(pb::ReplayDeadLetterResponse {
            applied: outcome.applied,
            error: outcome.error.unwrap_or_default(),
        })
    }
}

#[tonic::async_trait]
impl pb::query_service_server::QueryService for QueryGrpc {
    async fn get_cart(&self, req: Request<pb::GetCartRequest>) -> Reply<pb::CartRecord> {
        self.serve(&req, "QueryService.GetCart", &[GATEWAY], async {
            let t = tenant(req.metadata(), &req.get_ref().tenant)?;
            let id = CartId::parse(&req.get_ref().cart_id)
                .map_err(|e| ProjectionError::Invalid(e.to_string()))?;
            let before = self.abandoned_before(self.abandoned_after);
            let (tq, iq) = (t.clone(), id.clone());
            self.readers
                .with(move |c| queries::get_cart(c, tq.as_str(), iq.as_str(), before))
                .await?
                .map(cart_record)
                .ok_or_else(|| {
                    ProjectionError::NotFound(format!("cart {id} not found (tenant {t})"))
                })
        })
        .await
    }

    async fn list_carts(&self, req: Request<pb::ListCartsRequest>) -> Reply<pb::ListCartsResponse> {
        self.serve(&req, "QueryService.ListCarts", &[GATEWAY], async {
            let q = req.get_ref();
            let t = tenant(req.metadata(), &q.tenant)?;
            let filter = CartFilter {
                status: q
                    .status
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .map(StatusFilter::parse)
                    .transpose()?,
                updated_since_ns: time_arg("updated_since", q.updated_since.as_deref())?,
                user_id: user_filter(q.user_id.as_deref())?,
            };
            let before = self.abandoned_before(self.abandoned_after);
            self.list(
                t,
                filter,
                before,
                q.page_size,
                Listing::Carts,
                &q.page_token,
            )
            .await
        })
        .await
    }

    async fn list_orders(
        &self,
        req: Request<pb::ListOrdersRequest>,
    ) -> Reply<pb::ListOrdersResponse> {
        self.serve(&req, "QueryService.ListOrders", &[GATEWAY], async {
            let q = req.get_ref();
            let t = tenant(req.metadata(), &q.tenant)?;
            let since = time_arg("since", q.since.as_deref())?;
            let (rows, next_page_token) = self
                .page(
                    Listing::Orders,
                    q.page_size,
                    &q.page_token,
                    move |c, size, after| queries::list_orders(c, t.as_str(), since, size, after),
                )
                .await?;
            Ok(pb::ListOrdersResponse {
                orders: rows.into_iter().map(order_record).collect(),
                next_page_token,
            })
        })
        .await
    }

    async fn abandoned_carts(
        &self,
        req: Request<pb::AbandonedCartsRequest>,
    ) -> Reply<pb::ListCartsResponse> {
        self.serve(&req, "QueryService.AbandonedCarts", &[GATEWAY], async {
            let q = req.get_ref();
            let t = tenant(req.metadata(), &q.tenant)?;
            let idle = match q.idle_seconds {
                0 => self.abandoned_after,
                s => Duration::from_secs(s),
            };
            let filter = CartFilter {
                status: Some(StatusFilter::Abandoned),
                ..CartFilter::default()
            };
            let before = self.abandoned_before(idle);
            self.list(
                t,
                filter,
                before,
                q.page_size,
                Listing::Abandoned,
                &q.page_token,
            )
            .await
        })
        .await
    }

    async fn sku_demand(&self, req: Request<pb::SkuDemandRequest>) -> Reply<pb::SkuDemandResponse> {
        self.serve(&req, "QueryService.SkuDemand", &[GATEWAY], async {
            let t = tenant(req.metadata(), &req.get_ref().tenant)?;
            let n = limit(req.get_ref().limit);
            let rows = self
                .readers
                .with(move |c| queries::sku_demand(c, t.as_str(), n))
                .await?;
            Ok(pb::SkuDemandResponse {
                skus: rows
                    .into_iter()
                    .map(|r| pb::SkuDemand {
                        sku: r.sku,
                        quantity: r.quantity,
                        carts: r.carts,
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn list_dead_letters(
        &self,
        req: Request<pb::ListDeadLettersRequest>,
    ) -> Reply<pb::ListDeadLettersResponse> {
        self.serve(
            &req,
            "QueryService.ListDeadLetters",
            &[GATEWAY, ADMIN],
            async {
                let q = req.get_ref();
                let t = match q.tenant.as_str() {
                    "" => None,
                    raw => Some(tenant(req.metadata(), raw)?.to_string()),
                };
                let n = limit(q.limit);
                let rows = self
                    .readers
                    .with(move |c| poison_table::list(c, t.as_deref(), n))
                    .await?;
                Ok(pb::ListDeadLettersResponse {
                    dead_letters: rows.into_iter().map(dead_letter_record).collect(),
                })
            },
        )
        .await
    }

    async fn replay_dead_letter(
        &self,
        req: Request<pb::ReplayDeadLetterRequest>,
    ) -> Reply<pb::ReplayDeadLetterResponse> {
        let replay = self.replay(req.get_ref().id);
        self.serve(
            &req,
            "QueryService.ReplayDeadLetter",
            &[GATEWAY, ADMIN],
            replay,
        )
        .await
    }

    async fn status(&self, req: Request<pb::StatusRequest>) -> Reply<pb::StatusResponse> {
        self.serve(&req, "QueryService.Status", &[GATEWAY, ADMIN], async {
            let dead_letters = self.readers.with(poison_table::open_count).await?;
            let applied = self.writer.checkpoint();
            let last = self.shared.stream_last();
            Ok(pb::StatusResponse {
                applied_sequence: applied,
                stream_last_sequence: last,
                lag: last.saturating_sub(applied),
                dead_letters,
                rebuilding: self.shared.rebuild.is_running(),
            })
        })
        .await
    }
}

fn cart_record(c: CartRow) -> pb::CartRecord {
    pb::CartRecord {
        tenant: c.tenant,
        cart_id: c.cart_id,
        status: c.status,
        item_count: c.item_count,
        line_count: c.line_count,
        total_amount: c.total_amount,
        total_tax: c.total_tax,
        total_discount: c.total_discount,
        currency: c.currency,
        user_id: c.user_id,
        order_reference: c.order_reference,
        created_at: rfc3339(c.created_ns),
        updated_at: rfc3339(c.updated_ns),
        version: c.version,
        subscription_details_json: c.subscription_details.unwrap_or_default(),
        lines: c
            .lines
            .into_iter()
            .map(|l| pb::LineRecord {
                line_id: l.line_id,
                sku: l.sku,
                name: l.name,
                quantity: l.quantity,
                unit_price: l.unit_price,
                tax_rate: l.tax_rate,
            })
            .collect(),
    }
}

fn order_record(
    OrderRow {
        tenant,
        cart_id,
        order,
    }: OrderRow,
) -> pb::OrderRecord {
    pb::OrderRecord {
        tenant,
        cart_id,
        provider_order_id: order.provider_order_id,
        order_reference: order.order_reference,
        total_amount: order.total_amount,
        currency: order.currency,
        user_id: order.user_id,
        placed_at: rfc3339(order.placed_ns),
    }
}

fn dead_letter_record(p: PoisonRecord) -> pb::DeadLetter {
    pb::DeadLetter {
        id: p.id,
        consumer: p.consumer,
        tenant: p.tenant,
        cart_id: p.cart_id,
        subject: p.subject,
        stream_sequence: p.stream_sequence,
        reason: p.reason,
        deliveries: p.deliveries,
        failed_at: p.failed_at,
        replayed: p.replayed_at.is_some(),
    }
}
