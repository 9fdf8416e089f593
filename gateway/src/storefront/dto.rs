//! Request bodies of the storefront API, exactly as the go-cart-actor storefront client sends
//! them. Unknown fields are refused (a typo must not be silently ignored), except in an item
//! ([`ItemBody`]), and each body turns into one domain command; the body itself is echoed as the reply's `mutation`.

use cart_domain::{AddItem, Command, Marking};
use serde::{Deserialize, Serialize};
use shared::ApiError;
use utoipa::ToSchema;

/// One item: the body of `POST /cart`, and the entries of `POST /cart/add` and `/cart/set`.
/// Fields it does not name are ignored, not refused (unlike every other body): the storefront's
/// mini cart adds a related product by posting the whole catalogue item (`id`, `title`,
/// `values`, `stock`, ...) with its `sku` and `quantity`, as the Go backend it was written for
/// accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemBody {
    #[schema(example = "TEST-SKU-456")]
    pub sku: String,
    #[schema(example = 2)]
    pub quantity: u32,
    /// Shipping country (ISO 3166 alpha-2, lower case); the default country when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "se")]
    pub country: Option<String>,
    /// Store for click-and-collect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<String>,
}

impl ItemBody {
    /// The domain item; `country` fills in when the item names none.
    pub fn to_add_item(&self, country: &str) -> AddItem {
        AddItem {
            sku: self.sku.clone(),
            quantity: self.quantity,
            country: self.country.clone().unwrap_or_else(|| country.to_owned()),
            store_id: self.store_id.clone(),
        }
    }
}

/// `POST /cart/add` (several items in one step) and `POST /cart/set` (replace every line).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ItemsBody {
    pub items: Vec<ItemBody>,
    /// Country of items that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// `PUT /cart`: change a line's quantity.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangeQuantityBody {
    /// Line id (`items[].id` of the cart).
    #[schema(example = 1)]
    pub id: u32,
    #[schema(example = 3)]
    pub quantity: u32,
}

/// `POST /cart/delivery`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddDeliveryBody {
    #[schema(example = "standard")]
    pub provider: String,
    /// Line ids to deliver; empty or absent: every line without a delivery.
    #[serde(default)]
    pub items: Vec<u32>,
}

/// `PUT /cart/voucher`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VoucherBody {
    #[schema(example = "WELCOME10")]
    pub code: String,
    /// Accepted for compatibility; vouchers are not country specific.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// `PUT /cart/user`: attach the cart to a user (`null` detaches it).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserBody {
    pub user_id: Option<String>,
}

/// `PUT /cart/item/{lineId}/marking`: a gift or engraving text on a line. The text comes as
/// `text` or, as newer storefront clients send it, `marking`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MarkingBody {
    #[serde(rename = "type")]
    pub kind: u32,
    #[serde(alias = "marking")]
    pub text: String,
}

/// `PUT /cart/subscription-details` (and the `/v1` `UpsertSubscriptionDetails` command): add
/// subscription details, or replace those with `id`. Without an id one is derived: on `/v1`
/// from the request's command id (a retry under the same key is the same entry), on the
/// storefront route from the cart and the body (the same details sent again are one entry).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionDetailsBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[schema(example = "5G-UNLIMITED")]
    pub offering_code: String,
    #[schema(example = "bankid")]
    pub signing_type: String,
    /// The storefront's own data (a JSON object of at most 4 KiB), kept as given.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

impl SubscriptionDetailsBody {
    pub fn command(self) -> Command {
        Command::UpsertSubscriptionDetails {
            id: self.id.unwrap_or_default(),
            offering_code: self.offering_code,
            signing_type: self.signing_type,
            data: self.data,
        }
    }
}

impl From<MarkingBody> for Marking {
    fn from(b: MarkingBody) -> Self {
        Marking {
            kind: b.kind,
            text: b.text,
        }
    }
}

/// A body's `country`, when it names one, is a country code also where no item uses it: the
/// body is echoed as the reply's `mutation`.
fn checked_country(country: Option<&str>) -> Result<(), ApiError> {
    match country {
        Some(c) => cart_domain::decide::country(c)
            .map(drop)
            .map_err(ApiError::from),
        None => Ok(()),
    }
}

impl ItemsBody {
    /// The domain items; each ships to its own country, the body's, or `default_country`.
    pub fn items(&self, default_country: &str) -> Result<Vec<AddItem>, ApiError> {
        checked_country(self.country.as_deref())?;
        let country = self.country.as_deref().unwrap_or(default_country);
        Ok(self.items.iter().map(|i| i.to_add_item(country)).collect())
    }
}

impl VoucherBody {
    /// `ApplyVoucher`; `country` is accepted for compatibility (vouchers are not country
    /// specific) when it is a country code.
    pub fn command(&self) -> Result<Command, ApiError> {
        checked_country(self.country.as_deref())?;
        Ok(Command::ApplyVoucher {
            code: self.code.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::json::parse;

    #[test]
    fn go_cart_actor_bodies_parse_and_typos_are_refused() {
        let b: ItemsBody = parse(
            br#"{"items":[{"sku":"A","quantity":1},{"sku":"B","quantity":2,"country":"no"}],"country":"dk"}"#,
        )
        .unwrap();
        let items = b.items("se").unwrap();
        assert_eq!(items[0].country, "dk");
        assert_eq!(items[1].country, "no");
        let b: AddDeliveryBody = parse(br#"{"provider":"standard"}"#).unwrap();
        assert!(b.items.is_empty());
        let e = parse::<ChangeQuantityBody>(br#"{"id":1,"qty":3}"#).unwrap_err();
        assert!(
            e.message.starts_with("qty: unknown field qty"),
            "{}",
            e.message
        );
        let m: MarkingBody = parse(br#"{"type":1,"text":"Happy birthday"}"#).unwrap();
        assert_eq!(serde_json::to_value(&m).unwrap()["type"], 1);
        let m: MarkingBody = parse(br#"{"type":2,"marking":"For Ada"}"#).unwrap();
        assert_eq!((m.kind, m.text.as_str()), (2, "For Ada"));
        let e = parse::<MarkingBody>(br#"{"type":2,"marking":"a","text":"b"}"#).unwrap_err();
        assert!(e.message.contains("duplicate field"), "{}", e.message);
        let u: UserBody = parse(br#"{"userId":null}"#).unwrap();
        assert_eq!(u.user_id, None);
    }
}
