//! Which cart a storefront request is for: the `cartid` cookie (go-cart-actor compatible), or
//! the `{cartId}` of a `/cart/byid/{cartId}/...` route. A request without a usable cookie gets a
//! new id, sent back as a cookie with the (successful) response.

use axum::extract::{FromRequestParts, RawPathParams};
use axum::response::Response;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use http::HeaderValue;
use http::request::Parts;
use shared::{ApiError, CartId};

use crate::config::Config;

/// Cookie holding the storefront's cart id.
pub const CART_COOKIE: &str = "cartid";
/// Path parameter of the `/cart/byid/{cartId}` routes.
pub const CART_ID_PARAM: &str = "cartId";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// From the `cartid` cookie.
    Cookie,
    /// No (valid) cookie: a new id, to be set as the cookie.
    Minted,
    /// From the route (`/cart/byid/{cartId}`).
    Path,
}

/// The cart of a storefront request.
#[derive(Debug, Clone)]
pub struct StoreCart {
    pub id: CartId,
    pub source: Source,
}

impl StoreCart {
    /// A new cart, whose id the reply sets as the cookie.
    pub fn minted() -> Self {
        Self {
            id: CartId::generate(),
            source: Source::Minted,
        }
    }

    /// True when nothing can exist for this cart yet (a fresh id).
    pub fn is_new(&self) -> bool {
        self.source == Source::Minted
    }
}

impl<S: Send + Sync> FromRequestParts<S> for StoreCart {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        use axum::extract::rejection::RawPathParamsRejection as R;
        match RawPathParams::from_request_parts(parts, state).await {
            Ok(params) => {
                if let Some((_, raw)) = params.iter().find(|(k, _)| *k == CART_ID_PARAM) {
                    let id = CartId::parse(raw).map_err(ApiError::from)?;
                    return Ok(Self {
                        id,
                        source: Source::Path,
                    });
                }
            }
            // A route without parameters: the cookie's cart.
            Err(R::MissingPathParams(_)) => {}
            // A path naming a cart that is not text must not fall back to the cookie's cart
            // (or a new one): the request named another.
            Err(e) => {
                return Err(ApiError::invalid(format!(
                    "path parameter: {}",
                    e.body_text()
                )));
            }
        }
        let jar = CookieJar::from_headers(&parts.headers);
        match jar.get(CART_COOKIE).map(|c| CartId::parse(c.value())) {
            Some(Ok(id)) => Ok(Self {
                id,
                source: Source::Cookie,
            }),
            // A cookie that is not a cart id (tampered, from another app) is replaced, as a
            // missing one is: the storefront keeps working with a fresh cart.
            Some(Err(_)) | None => Ok(Self::minted()),
        }
    }
}

/// Attributes of the `cartid` cookie.
#[derive(Debug, Clone)]
pub struct CookiePolicy {
    secure: bool,
    max_age: time::Duration,
    domain: Option<String>,
}

impl CookiePolicy {
    pub fn new(cfg: &Config) -> Self {
        Self {
            secure: cfg.cookie_secure,
            max_age: time::Duration::seconds(
                i64::try_from(cfg.cookie_max_age_secs).unwrap_or(i64::MAX),
            ),
            domain: Some(cfg.cookie_domain.trim().to_owned()).filter(|d| !d.is_empty()),
        }
    }

    fn cookie(&self, value: String, max_age: time::Duration) -> HeaderValue {
        let mut c = Cookie::build((CART_COOKIE, value))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.secure)
            .max_age(max_age);
        if let Some(d) = &self.domain {
            c = c.domain(d.clone());
        }
        HeaderValue::from_str(&c.build().to_string())
            .expect("a cart id and the configured domain are valid header characters")
    }

    /// `Set-Cookie` for a cart id.
    pub fn set(&self, id: &CartId) -> HeaderValue {
        self.cookie(id.to_string(), self.max_age)
    }

    /// `Set-Cookie` that makes the browser forget the cart.
    pub fn clear(&self) -> HeaderValue {
        self.cookie(String::new(), time::Duration::ZERO)
    }

    /// Adds the cookie to `resp` when the cart id was minted for this request.
    pub fn attach(&self, cart: &StoreCart, resp: Response) -> Response {
        self.attach_if(cart.is_new(), cart, resp)
    }

    /// [`Self::attach`] for a change the cart took: the cookie's cart gets its cookie again,
    /// so that its `Max-Age` counts from the shopper's last change, not from the cart's first
    /// (a cart in use was lost when its cookie expired). Only a change: a read that raced a
    /// newer cookie (the next cart after a purchase, or none after `DELETE /cart`) would set
    /// the old one back. None for `/cart/byid`.
    pub fn attach_changed(&self, cart: &StoreCart, resp: Response) -> Response {
        self.attach_if(cart.source != Source::Path, cart, resp)
    }

    fn attach_if(&self, set: bool, cart: &StoreCart, mut resp: Response) -> Response {
        if set {
            resp.headers_mut()
                .append(http::header::SET_COOKIE, self.set(&cart.id));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_attributes() {
        let p = CookiePolicy::new(&Config::default());
        let id = CartId::parse("123").unwrap();
        let v = p.set(&id).to_str().unwrap().to_owned();
        for part in [
            "cartid=123",
            "HttpOnly",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=2592000",
        ] {
            assert!(v.contains(part), "{v} lacks {part}");
        }
        assert!(!v.contains("Secure"), "{v}");
        assert!(p.clear().to_str().unwrap().contains("Max-Age=0"));
        let p = CookiePolicy::new(&Config {
            cookie_secure: true,
            cookie_domain: "shop.example".into(),
            ..Config::default()
        });
        let v = p.set(&id).to_str().unwrap().to_owned();
        assert!(
            v.contains("Secure") && v.contains("Domain=shop.example"),
            "{v}"
        );
    }
}
