//! The OpenAPI document covers exactly what the router serves (no NATS needed: nothing here
//! reaches an aggregate).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use gateway::{AppState, Config};
use http::Request;
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

/// The documented command union is the domain's command as `/v1` reads it: for every
/// example command, each field it sends is documented for its `type`, and each documented
/// required field is sent.
#[tokio::test]
async fn the_command_schema_is_the_json_form_of_every_domain_command() {
    let doc = document(gateway::app(state())).await;
    let schemas = &doc["components"]["schemas"];
    let resolve = |v: &serde_json::Value| -> serde_json::Value {
        match v["$ref"].as_str() {
            Some(r) => schemas[r.trim_start_matches("#/components/schemas/")].clone(),
            None => v.clone(),
        }
    };
    // Each variant's properties and required fields, by its `type`.
    let mut variants = BTreeMap::new();
    for variant in schemas["Command"]["oneOf"].as_array().expect("a oneOf") {
        let parts: Vec<serde_json::Value> = match variant["allOf"].as_array() {
            Some(all) => all.iter().map(resolve).collect(),
            None => vec![variant.clone()],
        };
        let mut properties = BTreeSet::new();
        let mut required = BTreeSet::new();
        for part in &parts {
            properties.extend(
                part["properties"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, _)| k.clone()),
            );
            required.extend(
                part["required"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.as_str().map(str::to_owned)),
            );
        }
        let name = parts.iter().find_map(|p| {
            p["properties"]["type"]["enum"][0]
                .as_str()
                .map(str::to_owned)
        });
        variants.insert(
            name.expect("every variant names its type"),
            (properties, required),
        );
    }
    for command in cart_domain::Command::examples() {
        let json = serde_json::to_value(&command).unwrap();
        let sent: BTreeSet<String> = json.as_object().unwrap().keys().cloned().collect();
        let (properties, required) = variants
            .get(command.name())
            .unwrap_or_else(|| panic!("{} is not documented", command.name()));
        assert!(
            sent.is_subset(properties),
            "{json}: documented {properties:?}"
        );
        assert!(required.is_subset(&sent), "{json}: required {required:?}");
    }
}
