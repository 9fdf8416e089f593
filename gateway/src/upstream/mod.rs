//! The services behind the gateway: the aggregate nodes (found through placement, called
//! through the routing client: [`aggregate`], [`discovery`]), the projection and runner
//! ([`services`]), and the event store itself for cart histories ([`history`]).

pub mod aggregate;
pub mod discovery;
pub mod history;
pub mod services;
