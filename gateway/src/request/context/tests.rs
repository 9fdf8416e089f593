use super::*;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, v.parse().unwrap());
    }
    h
}

fn keyed() -> Auth {
    let keys = [("k1", "tenant-a"), ("k2", "tenant-b")]
        .map(|(k, t)| (k.to_owned(), TenantId::parse(t).unwrap()))
        .into();
    Auth::new(None, keys, "")
}

#[test]
fn without_keys_the_header_or_the_default_decides() {
    let auth = Auth::new(Some(TenantId::default_tenant()), HashMap::new(), "");
    assert_eq!(
        auth.resolve(&headers(&[])).unwrap().tenant.as_str(),
        "default"
    );
    let ctx = auth.resolve(&headers(&[(TENANT_ID, "shop-1")])).unwrap();
    assert_eq!(ctx.tenant.as_str(), "shop-1");
    let e = auth
        .resolve(&headers(&[(TENANT_ID, "Bad Tenant")]))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
}

#[test]
fn with_keys_the_key_decides() {
    let auth = keyed();
    let e = auth.resolve(&headers(&[])).unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthenticated);
    let e = auth.resolve(&headers(&[(API_KEY, "nope")])).unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthenticated);
    let ctx = auth.resolve(&headers(&[(API_KEY, "k1")])).unwrap();
    assert_eq!(ctx.tenant.as_str(), "tenant-a");
    let ctx = auth
        .resolve(&headers(&[(API_KEY, "k1"), (TENANT_ID, "tenant-a")]))
        .unwrap();
    assert_eq!(ctx.tenant.as_str(), "tenant-a");
    let e = auth
        .resolve(&headers(&[(API_KEY, "k1"), (TENANT_ID, "tenant-b")]))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::PermissionDenied);
    let known = |key| {
        auth.known_key(&headers(&[(API_KEY, key)]))
            .map(|d| d.label())
    };
    assert_eq!(known("k2"), Some(KeyDigest::of("k2").label()));
    assert_ne!(known("k2"), known("k1"));
    assert_eq!(known("zz"), None);
}

#[test]
fn a_keyless_storefront_request_is_the_storefront_tenants_when_there_is_one() {
    let shop = TenantId::parse("shop-1").unwrap();
    let auth = keyed().with_storefront_tenant(Some(shop.clone()));
    let at = |path, h: &[(&'static str, &str)]| auth.resolve_scoped(&headers(h), path);
    for path in ["/cart", "/cart/", "/cart/byid/c-1/checkout"] {
        let (ctx, backoffice) = at(path, &[]).unwrap();
        assert_eq!(
            (ctx.tenant.as_str(), backoffice),
            ("shop-1", false),
            "{path}"
        );
    }
    for path in [
        "/v1/carts/c-1",
        "/v1/carts",
        "/carts",
        "/cartx",
        "/admin/placement",
    ] {
        let e = at(path, &[]).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthenticated, "{path}");
    }
    // A key still decides; a wrong one is refused, not taken as keyless.
    let (ctx, _) = at("/cart", &[(API_KEY, "k1")]).unwrap();
    assert_eq!(ctx.tenant.as_str(), "tenant-a");
    let e = at("/cart", &[(API_KEY, "nope")]).unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthenticated);
    let mut unreadable = headers(&[]);
    unreadable.insert(API_KEY, http::HeaderValue::from_bytes(b"k\xff1").unwrap());
    let e = auth.resolve_scoped(&unreadable, "/cart").unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthenticated);
    // A keyless request naming another tenant is refused.
    let e = at("/cart", &[(TENANT_ID, "tenant-a")]).unwrap_err();
    assert_eq!(e.code, ErrorCode::PermissionDenied);
    assert!(auth.is_known_tenant(&shop));
    // Without a storefront tenant, a keyless storefront request is refused as before.
    let e = keyed().resolve_scoped(&headers(&[]), "/cart").unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthenticated);
}

#[test]
fn keys_are_looked_up_by_their_sha256_digest() {
    // FIPS 180-2's test vector: the digest is SHA-256 of the key's bytes.
    assert_eq!(KeyDigest::of("abc").label(), "ba7816bf8f01cfea");
    let auth = keyed();
    // A key that shares all but its last byte, or is a prefix or an extension of one, or
    // differs in case, is unknown.
    for near in ["k", "k3", "k1 x", "K1", "k1k1"] {
        let e = auth.resolve(&headers(&[(API_KEY, near)])).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthenticated, "{near:?}");
    }
}

#[test]
fn only_back_office_keys_take_the_back_office_routes() {
    let office = [("o1", "tenant-a")]
        .map(|(k, t)| (k.to_owned(), TenantId::parse(t).unwrap()))
        .into();
    let auth = keyed().with_backoffice_keys(office);
    let scoped = |auth: &Auth, key: Option<&str>| {
        let h = key.map_or_else(HeaderMap::new, |k| headers(&[(API_KEY, k)]));
        auth.resolve_scoped(&h, "/v1/carts")
            .map(|(ctx, office)| (ctx.tenant.to_string(), office))
    };
    assert_eq!(
        scoped(&auth, Some("o1")).unwrap(),
        ("tenant-a".into(), true)
    );
    assert_eq!(
        scoped(&auth, Some("k1")).unwrap(),
        ("tenant-a".into(), false),
        "a storefront key"
    );
    assert!(scoped(&auth, None).is_err());
    let open = Auth::new(Some(TenantId::default_tenant()), HashMap::new(), "");
    assert!(scoped(&open, None).unwrap().1, "no keys: no scopes either");
}

#[test]
fn admin_is_denied_by_default_and_needs_the_token() {
    let off = Auth::new(None, HashMap::new(), "");
    let e = off
        .check_admin(&headers(&[("authorization", "Bearer x")]))
        .unwrap_err();
    assert!(e.message.contains("disabled"), "{}", e.message);
    let on = Auth::new(None, HashMap::new(), "s3cret");
    assert!(on.check_admin(&headers(&[])).is_err());
    assert!(
        on.check_admin(&headers(&[("authorization", "Bearer nope")]))
            .is_err()
    );
    assert!(
        on.check_admin(&headers(&[("authorization", "Bearer s3cret")]))
            .is_ok()
    );
}
