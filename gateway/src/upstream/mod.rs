//! The services behind the gateway: the aggregate nodes (found through placement, called
//! through the routing client: [`aggregate`], [`discovery`]) and the projection and runner
//! ([`services`]).

pub mod aggregate;
pub mod discovery;
pub mod services;
