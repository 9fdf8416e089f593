//! The `CartService` requests addressed to one cart. The client routes them by that cart and
//! the aggregate admits them for it, both through [`CartRequest`].

use crate::cart::v1 as pb;

/// A request for one cart: its tenant and cart id, as the caller sent them (unparsed).
pub trait CartRequest {
    fn tenant(&self) -> &str;
    fn cart_id(&self) -> &str;
}

/// Implements [`CartRequest`] for requests with `tenant` and `cart_id` fields.
macro_rules! cart_requests {
    ($($request:ty),+ $(,)?) => {$(
        impl CartRequest for $request {
            fn tenant(&self) -> &str {
                &self.tenant
            }

            fn cart_id(&self) -> &str {
                &self.cart_id
            }
        }
    )+};
}

cart_requests!(
    pb::ExecuteRequest,
    pb::ExecuteBatchRequest,
    pb::GetCartRequest,
    pb::WatchCartRequest,
);
