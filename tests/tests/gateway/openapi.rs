//! The OpenAPI document covers exactly what the router serves (no NATS needed: nothing here
//! reaches an aggregate).

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use gateway::{AppState, Config};
use http::Request;
use serde_json::Value;
use tower::ServiceExt;

fn state() -> AppState {
    common::offline_state(Config::default())
}

type RouteTable = BTreeMap<String, BTreeSet<String>>;

/// The router's own route table (path → methods), read from its `Debug` form: axum has no
/// public route listing, but its debug output names every path and each route's `Allow` set.
fn served(router: &axum::Router) -> RouteTable {
    let dbg = format!("{router:?}");
    let main = &dbg[..dbg.find("fallback_router").expect("router debug layout")];
    let mut methods: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut rest = &main[main.find("routes: {").unwrap()..main.find("node: Node").unwrap()];
    while let Some(i) = rest.find("RouteId(") {
        rest = &rest[i + 8..];
        let id = rest[..rest.find(')').unwrap()].to_owned();
        let allow = rest.find("allow_header: Bytes(b\"").unwrap() + 22;
        let end = allow + rest[allow..].find('"').unwrap();
        let set = rest[allow..end]
            .split(',')
            .filter(|m| *m != "HEAD")
            .map(str::to_owned)
            .collect();
        methods.insert(id, set);
        rest = &rest[end..];
    }
    let mut table = RouteTable::new();
    let mut rest = &main[main.find("node: Node { paths: {").unwrap()..];
    while let Some(i) = rest.find("RouteId(") {
        rest = &rest[i + 8..];
        let id = rest[..rest.find(')').unwrap()].to_owned();
        let start = rest.find('"').unwrap() + 1;
        let end = start + rest[start..].find('"').unwrap();
        table.insert(rest[start..end].to_owned(), methods[&id].clone());
        rest = &rest[end..];
    }
    table
}

async fn document(router: axum::Router) -> serde_json::Value {
    let resp = router
        .oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 22)
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

fn documented(doc: &serde_json::Value) -> RouteTable {
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "put", "post", "delete", "patch"].contains(&k.as_str()))
                .map(|k| k.to_ascii_uppercase())
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

#[tokio::test]
async fn the_document_covers_every_route_the_router_serves() {
    let router = gateway::app(state());
    let served = served(&router);
    assert!(served.len() > 30, "route table parsed: {served:?}");
    let doc = document(router).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let documented = documented(&doc);
    assert_eq!(
        served, documented,
        "router (left) and OpenAPI document (right) disagree"
    );
}

#[tokio::test]
async fn every_route_of_the_brief_is_documented() {
    let doc = document(gateway::app(state())).await;
    let documented = documented(&doc);
    let mut want: Vec<(&str, &str)> = vec![
        ("GET", "/cart"),
        ("GET", "/cart/"),
        ("POST", "/cart"),
        ("POST", "/cart/"),
        ("PUT", "/cart"),
        ("PUT", "/cart/"),
        ("DELETE", "/cart/"),
        ("GET", "/cart/{id}"),
        ("GET", "/cart/checkout"),
        ("GET", "/cart/confirmation/{orderId}"),
        ("POST", "/cart/push"),
        ("POST", "/v1/carts"),
        ("GET", "/v1/carts/{id}"),
        ("POST", "/v1/carts/{id}/commands"),
        ("GET", "/v1/carts/{id}/events"),
        ("GET", "/v1/carts/{id}/history"),
        ("GET", "/admin/placement"),
        ("GET", "/admin/carts/{id}/history"),
        ("GET", "/health"),
        ("GET", "/ready"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    ];
    let scoped = [
        ("GET", "/add/{sku}"),
        ("POST", "/add"),
        ("DELETE", "/{id}"),
        ("POST", "/set"),
        ("POST", "/delivery"),
        ("DELETE", "/delivery/{id}"),
        ("PUT", "/delivery/{id}/pickupPoint"),
        ("PUT", "/voucher"),
        ("DELETE", "/voucher/{id}"),
        ("PUT", "/user"),
        ("PUT", "/item/{lineId}/marking"),
        ("DELETE", "/item/{lineId}/marking"),
    ];
    let owned: Vec<(String, String)> = scoped
        .iter()
        .flat_map(|(m, p)| {
            [
                ((*m).to_owned(), format!("/cart{p}")),
                ((*m).to_owned(), format!("/cart/byid/{{cartId}}{p}")),
            ]
        })
        .chain(["GET", "POST", "PUT"].map(|m| (m.to_owned(), "/cart/byid/{cartId}".to_owned())))
        .collect();
    want.extend(owned.iter().map(|(m, p)| (m.as_str(), p.as_str())));
    for (method, path) in want {
        assert!(
            documented.get(path).is_some_and(|m| m.contains(method)),
            "{method} {path} is not documented"
        );
    }
}

/// Every `$ref` resolves, and operation ids are unique (code generators need both).
#[tokio::test]
async fn the_document_is_self_contained() {
    let doc = document(gateway::app(state())).await;
    let text = doc.to_string();
    let schemas = doc["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &part[..part.find('"').unwrap()];
        assert!(schemas.contains_key(name), "dangling $ref {name}");
    }
    let mut ids = BTreeSet::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            if let Some(id) = op.get("operationId").and_then(|v| v.as_str()) {
                assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
            }
        }
    }
    let byid = &doc["paths"]["/cart/byid/{cartId}/set"];
    assert_eq!(byid["parameters"][0]["name"], "cartId");
}

/// Finds where `value` does not fit `schema`: a field the schema does not describe, a required
/// one missing, a value of another type. Enough of JSON Schema for what utoipa writes: `$ref`,
/// `allOf` (merged), `oneOf` (one must fit), objects, maps, arrays and scalar types.
fn misfits(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let resolve = |s: &Value| match s["$ref"].as_str() {
        Some(r) => {
            doc["components"]["schemas"][r.trim_start_matches("#/components/schemas/")].clone()
        }
        None => s.clone(),
    };
    let schema = resolve(schema);
    if let Some(all) = schema["allOf"].as_array() {
        let mut merged = serde_json::json!({"type": "object", "properties": {}, "required": []});
        for part in all.iter().map(resolve) {
            for (k, v) in part["properties"].as_object().into_iter().flatten() {
                merged["properties"][k] = v.clone();
            }
            for r in part["required"].as_array().into_iter().flatten() {
                merged["required"].as_array_mut().unwrap().push(r.clone());
            }
        }
        return misfits(doc, &merged, value, at);
    }
    if let Some(one) = schema["oneOf"].as_array() {
        let fits = one
            .iter()
            .filter(|s| misfits(doc, s, value, at).is_empty())
            .count();
        return if fits == 1 {
            vec![]
        } else {
            vec![format!("{at}: fits {fits} of the oneOf")]
        };
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return vec![], // any value
    };
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if !types.contains(&kind) {
        return vec![format!("{at}: {kind}, documented {types:?}")];
    }
    let mut out = Vec::new();
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                out.extend(misfits(doc, &schema["items"], item, &format!("{at}[{i}]")));
            }
        }
        Value::Object(fields) => {
            if let Some(enumerated) = schema["properties"]["type"]["enum"].as_array() {
                let kind = fields.get("type").unwrap_or(&Value::Null);
                if !enumerated.contains(kind) {
                    return vec![format!("{at}: type {kind} is not {enumerated:?}")];
                }
            }
            for r in schema["required"].as_array().into_iter().flatten() {
                if !fields.contains_key(r.as_str().unwrap()) {
                    out.push(format!("{at}: required {r} is missing"));
                }
            }
            for (k, v) in fields {
                let at = format!("{at}.{k}");
                match (
                    schema["properties"].get(k),
                    schema.get("additionalProperties"),
                ) {
                    (Some(s), _) | (None, Some(s)) => out.extend(misfits(doc, s, v, &at)),
                    // A free-form object (`value_type = Object`).
                    (None, None) if schema.get("properties").is_none() => {}
                    (None, None) => out.push(format!("{at}: not documented")),
                }
            }
        }
        _ => {}
    }
    out
}

/// The documented replies are what the gateway serializes: a cart with every optional part
/// set, in both shapes and inside a mutation reply, fits the schemas the routes name.
#[tokio::test]
async fn the_cart_schemas_describe_what_is_served() {
    let doc = document(gateway::app(state())).await;
    let cart: cart_domain::Cart = serde_json::from_value(serde_json::json!({
        "id": "1", "currency": "SEK", "user_id": "u", "payment_status": "p",
        "lines": [{"id": 1, "quantity": 2, "store_id": "s", "country": "se",
            "marking": {"type": 1, "text": "t"},
            "product": {"sku": "A", "item_id": 1, "name": "A", "unit_price": 1000,
                "org_price": 1200, "tax_rate": 2500, "currency": "SEK", "stock": 3,
                "item_type": "product", "image": "x", "brand": "x", "category": "x",
                "seller_id": "x", "seller_name": "x", "outlet": "x"}}],
        "deliveries": [{"id": 1, "provider": "standard", "line_ids": [1], "price": 4900,
            "tax_rate": 2500, "pickup_point": {"id": "p", "name": "x", "address": "x",
                "city": "x", "zip": "x", "country": "x"}}],
        "vouchers": [{"id": 1, "code": "TEN", "discount": {"kind": "fixed", "amount": 1000},
            "min_order": 0}],
        "order": {"provider_order_id": "o", "order_reference": "r"},
        "subscription_details": [{"id": "s1", "offering_code": "5G", "signing_type": "bankid",
            "data": {}}],
        "next_line_id": 1, "next_delivery_id": 1, "next_voucher_id": 1
    }))
    .expect("a cart");
    let reply_schema = |path: &str, method: &str| {
        doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
            .clone()
    };
    let v1 = serde_json::to_value(cart_domain::CartView::of(&cart)).unwrap();
    let storefront = serde_json::to_value(cart_domain::StorefrontCart::storefront(&cart)).unwrap();
    assert!(storefront["totalTax"].is_i64() && v1["totalTax"].is_object());
    let mutation = |result: &Value| {
        serde_json::json!({"result": result, "mutations": [
            {"type": "AddItem", "mutation": {"sku": "A"},
             "error": {"message": "m", "code": "unknown_sku", "statusCode": 404}}]})
    };
    for (path, method, served) in [
        ("/v1/carts/{id}", "get", v1.clone()),
        ("/v1/carts/{id}/commands", "post", mutation(&v1)),
        ("/cart", "get", storefront.clone()),
        ("/cart", "post", mutation(&storefront)),
    ] {
        let found = misfits(&doc, &reply_schema(path, method), &served, "");
        assert!(found.is_empty(), "{method} {path}: {found:?}");
    }
    // And it can fail: the `/v1` cart is not the storefront's.
    assert!(!misfits(&doc, &reply_schema("/cart", "get"), &v1, "").is_empty());
}

/// The documented command union is the domain's command as `/v1` reads it: every example
/// command fits exactly one variant of the schema the route names.
#[tokio::test]
async fn the_command_schema_is_the_json_form_of_every_domain_command() {
    let doc = document(gateway::app(state())).await;
    let body = &doc["paths"]["/v1/carts/{id}/commands"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    for command in cart_domain::Command::examples() {
        let json = serde_json::to_value(&command).unwrap();
        let found = misfits(&doc, body, &json, "");
        assert!(found.is_empty(), "{json}: {found:?}");
        let list = serde_json::json!({"commands": [json], "atomic": true});
        assert!(misfits(&doc, body, &list, "").is_empty(), "{list}");
    }
    let unknown = serde_json::json!({"type": "ChangeQuantity", "lineId": 1, "quantity": 1, "x": 1});
    assert!(!misfits(&doc, body, &unknown, "").is_empty());
}

/// `POST /v1/carts` reaches no service: the document lists what it can answer (its body's 400
/// and 413 among them), and no upstream failure.
#[tokio::test]
async fn creating_a_cart_documents_its_body_errors_and_no_upstream_failure() {
    let doc = document(gateway::app(state())).await;
    let statuses: BTreeSet<&str> = doc["paths"]["/v1/carts"]["post"]["responses"]
        .as_object()
        .expect("responses of POST /v1/carts")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        statuses,
        BTreeSet::from(["201", "400", "401", "403", "413", "429"]),
        "{statuses:?}"
    );
}
