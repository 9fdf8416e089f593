//! How a cart's state is stored in `cart_states.state`.
//!
//! - A BLOB is a format byte followed by the payload. Format 1: the state's JSON, LZ4
//!   block-compressed with its length prepended. A three-line cart's JSON (about 1.1 KB) does
//!   not fit in a 4 KiB page's cell and spilled into an overflow page, so every state update
//!   wrote two pages; compressed (about 0.6 KB) it fits, and the table is half the size.
//! - TEXT is the state as plain JSON, as builds before the compact format wrote it; it is
//!   still read, and replaced by a BLOB the next time the cart changes.
//!
//! A new format gets a new format byte; every format ever written stays decodable.

use cart_domain::CartState;
use rusqlite::types::ValueRef;

/// LZ4-compressed JSON.
const LZ4_JSON: u8 = 1;
/// Largest decompressed state accepted (a corrupt length must not allocate gigabytes).
const MAX_JSON: usize = 16 * 1024 * 1024;

/// The stored form of `state` (the newest format).
pub fn encode(state: &CartState) -> Vec<u8> {
    let json = serde_json::to_vec(state).expect("cart states always serialize");
    let packed = lz4_flex::block::compress_prepend_size(&json);
    let mut out = Vec::with_capacity(1 + packed.len());
    out.push(LZ4_JSON);
    out.extend_from_slice(&packed);
    out
}

/// Reads a stored state, in any format this or an earlier build wrote.
pub fn decode(value: ValueRef<'_>) -> Result<CartState, String> {
    match value {
        ValueRef::Text(json) => serde_json::from_slice(json).map_err(|e| e.to_string()),
        ValueRef::Blob([LZ4_JSON, packed @ ..]) => {
            let (len, _) = lz4_flex::block::uncompressed_size(packed).map_err(|e| e.to_string())?;
            if len > MAX_JSON {
                return Err(format!(
                    "decompressed length {len} exceeds {MAX_JSON} bytes"
                ));
            }
            let json =
                lz4_flex::block::decompress_size_prepended(packed).map_err(|e| e.to_string())?;
            serde_json::from_slice(&json).map_err(|e| e.to_string())
        }
        ValueRef::Blob([format, ..]) => Err(format!("unknown state format {format}")),
        other => Err(format!(
            "a state is TEXT or BLOB, got {:?}",
            other.data_type()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cart_domain::ids::CartId;
    use cart_domain::{Event, event::ItemAdded};

    fn state() -> CartState {
        let mut state = CartState::new(CartId::parse("c1").unwrap());
        for (id, sku) in [(1, "TEST-SKU-123"), (2, "BOOK-NOVEL-01")] {
            let added: ItemAdded = serde_json::from_value(serde_json::json!({
                "line_id": id, "sku": sku, "item_id": 7, "name": "A thing", "quantity": 2,
                "unit_price": 24900, "tax_rate": 2500, "currency": "SEK", "stock": 4,
                "item_type": "product", "country": "se"
            }))
            .unwrap();
            cart_domain::apply(&mut state.cart, &Event::ItemAdded(added));
        }
        state.version = 42;
        state.revision = 2;
        state
    }

    #[test]
    fn round_trips_and_reads_the_json_of_earlier_builds() {
        let state = state();
        let blob = encode(&state);
        assert_eq!(blob[0], LZ4_JSON);
        let json = serde_json::to_string(&state).unwrap();
        assert!(blob.len() < json.len(), "{} >= {}", blob.len(), json.len());
        assert_eq!(decode(ValueRef::Blob(&blob)).unwrap(), state);
        assert_eq!(decode(ValueRef::Text(json.as_bytes())).unwrap(), state);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let blob = encode(&state());
        for bad in [
            &[9, 1, 2][..],
            &blob[..blob.len() / 2],
            &[LZ4_JSON, 255, 255, 255, 127],
        ] {
            assert!(decode(ValueRef::Blob(bad)).is_err(), "{bad:?}");
        }
        assert!(decode(ValueRef::Integer(1)).is_err());
        assert!(decode(ValueRef::Text(b"{")).is_err());
    }
}
