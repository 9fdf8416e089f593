//! How the gateway and the runner reach the cart that owns a command.
//!
//! - [`PlacementView`]: a live view of the aggregate nodes (`CART_NODES`) and of which node owns
//!   each shard (`CART_PLACEMENT`), kept by KV watches. The aggregates use it too, to claim
//!   shards.
//! - [`CartClient`]: `CartService` calls routed to the owner of the cart's shard, with
//!   deadlines, one redirect on `not_owner` and failover to any live node. `Execute` goes over
//!   [`multiplex`]: one long-lived `ExecuteStream` per connection instead of a call each.
//! - [`LocalNode`]: an aggregate node in the caller's own process, whose carts' `Execute` calls
//!   skip the network ([`local`]).
//!
//! Depends on the wire contract (`proto`) and the shared vocabulary only, never on the aggregate
//! server.

pub mod client;
pub mod local;
pub mod multiplex;
pub mod placement_view;
mod pools;

pub use client::{CartClient, ClientConfig};
pub use local::LocalNode;
pub use placement_view::PlacementView;
