//! The pure cart: [`decide`] and [`evolve`], no I/O, no clock, no randomness except what the
//! [`Context`] passes in. This crate depends on serde, serde_json, thiserror, time and uuid only
//! (ids are minted only with the `generate` feature, which brings uuid's clock and random
//! source); the services, the wire formats and the transports build on it, never the other
//! way round. It keeps no state: a caller that keeps many carts owns a
//! [`product_pool::ProductPool`] to share equal product facts between them.
//!
//! - Commands ([`Command`]) are imperatives; events ([`Event`]) are past-tense facts with a
//!   version, stored as `{type, v, data}` inside one [`EventMessage`] per accepted command.
//! - State is the fold of events ([`Cart`]); totals are derived ([`totals()`]), and the JSON the
//!   storefront reads is [`CartView`].
//! - Identifiers ([`ids`]), the catalog model ([`catalog`]) and the stable error codes
//!   ([`ErrorCode`]) are the vocabulary shared with every edge.
//! - [`CartState`] adds the stream version, revision and recent command ids used for replay,
//!   exactly-once replies and snapshots.

pub mod cart;
pub mod catalog;
pub mod code;
pub mod command;
pub mod decide;
pub mod error;
pub mod event;
pub mod ids;
pub mod line_product;
pub mod money;
pub mod payment;
pub mod product_pool;
pub mod state;
pub mod totals;
pub mod view;

pub use cart::{
    Cart, CheckoutStatus, Line, LineOptions, Marking, MismatchedOrder, PAYMENT_MISMATCH,
    PickupPoint, SubscriptionDetails, apply, evolve,
};
pub use code::ErrorCode;
pub use command::{AddItem, CatalogNeeds, Command, Limits};
pub use decide::{Context, decide};
pub use error::DomainError;
pub use event::lines_digest;
pub use event::{Event, EventDecodeError, EventMessage, EventRecord, Refusal, Refused};
pub use money::{CartPrice, TaxRate};
pub use payment::{PaidOrder, PaymentMismatch, checkout_lines};
pub use state::{ApplyReport, CartState, KeyedCommand, Prior, RecentCommand, Retain};
pub use totals::{Totals, totals};
pub use view::{
    Amount, CartView, MutationError, MutationOutcome, MutationReply, StorefrontCart,
    SubscriptionDetailsView,
};

#[cfg(test)]
mod tests;
