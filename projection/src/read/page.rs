//! Keyset pagination: a page token is the sort key of the last row returned, encoded so
//! clients treat it as opaque (and a token from one listing is refused by another).

use crate::error::ProjectionError;

/// Rows per page when the request says 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// The largest page served.
pub const MAX_PAGE_SIZE: u32 = 500;

/// Position after the last row of a page: `(time in ns, cart id)`, descending order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub at_ns: i64,
    pub cart_id: String,
}

/// Which listing a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Carts,
    Orders,
    Abandoned,
}

impl Listing {
    fn tag(self) -> &'static str {
        match self {
            Listing::Carts => "c1",
            Listing::Orders => "o1",
            Listing::Abandoned => "a1",
        }
    }
}

/// Page size of a request: 0 means the default, larger than the maximum is capped.
pub fn size(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

pub fn encode(listing: Listing, cursor: &Cursor) -> String {
    let raw = format!("{}:{}:{}", listing.tag(), cursor.at_ns, cursor.cart_id);
    hex::encode(raw)
}

/// Empty token: first page.
pub fn decode(listing: Listing, token: &str) -> Result<Option<Cursor>, ProjectionError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        ProjectionError::Invalid(
            "page_token is not a token from this listing (pass the next_page_token unchanged)"
                .into(),
        )
    };
    if token.len() > 512 {
        return Err(invalid());
    }
    // Hex digits only (anything else, an odd length included, is refused).
    let bytes = hex::decode(token).map_err(|_| invalid())?;
    let raw = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = raw.splitn(3, ':');
    let (Some(tag), Some(ns), Some(cart_id)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    if tag != listing.tag() || cart_id.is_empty() {
        return Err(invalid());
    }
    Ok(Some(Cursor {
        at_ns: ns.parse().map_err(|_| invalid())?,
        cart_id: cart_id.to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_bound_to_their_listing() {
        let c = Cursor {
            at_ns: -5,
            cart_id: "cart:1".into(),
        };
        let t = encode(Listing::Carts, &c);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(decode(Listing::Carts, &t).unwrap(), Some(c));
        assert_eq!(decode(Listing::Carts, "").unwrap(), None);
        assert!(decode(Listing::Orders, &t).is_err());
        for bad in ["zz", "abc", "6331", &"00".repeat(300), "aéa", "é6", "+1"] {
            let err = decode(Listing::Carts, bad).unwrap_err();
            assert!(err.to_string().contains("page_token"), "{err}");
        }
    }

    #[test]
    fn page_size_defaults_and_caps() {
        assert_eq!(size(0), DEFAULT_PAGE_SIZE);
        assert_eq!(size(7), 7);
        assert_eq!(size(100_000), MAX_PAGE_SIZE);
    }
}
