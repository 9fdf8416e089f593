//! Commands the tests of every service send.

use cart_domain::{AddItem, Command};

/// Adding `quantity` of `sku` with Swedish prices, as a storefront in Sweden does.
pub fn add_item(sku: &str, quantity: u32) -> Command {
    Command::AddItem(AddItem {
        sku: sku.into(),
        quantity,
        country: "se".into(),
        store_id: None,
    })
}
