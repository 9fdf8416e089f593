//! The versioned API through the real stack: ETags and preconditions, idempotent retries,
//! command lists, live updates.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

async fn create(stack: &Stack, http: &reqwest::Client) -> String {
    let resp = http.post(stack.url("/v1/carts")).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["etag"], "\"0\"");
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let (_, cart) = json(resp).await;
    let id = cart["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/carts/{id}"));
    id
}

/// A stack (`None` without NATS), a client and a cart created through the API.
async fn stack_with_cart() -> Option<(Stack, reqwest::Client, String)> {
    let stack = stack().await?;
    let http = reqwest::Client::new();
    let id = create(&stack, &http).await;
    Some((stack, http, id))
}

#[tokio::test]
async fn idempotency_key_replays_the_original_outcome() {
    let Some((stack, http, id)) = stack_with_cart().await else {
        return;
    };
    let url = stack.url(&format!("/v1/carts/{id}/commands"));
    let send = |key: &'static str, body: Value| {
        http.post(&url)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };

    let first = send("k-1", add("TEST-SKU-123", 2)).await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let etag = first.headers()["etag"].clone();
    let first_body = first.text().await.unwrap();

    let again = send("k-1", add("TEST-SKU-123", 2)).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["etag"], etag);
    assert_eq!(again.text().await.unwrap(), first_body, "byte-exact replay");

    // Another gateway has no cached copy: the aggregate recognises the derived command id.
    let (other, base) = stack.another_gateway(|_| {}).await;
    let resp = http
        .post(format!("{base}/v1/carts/{id}/commands"))
        .header("idempotency-key", "k-1")
        .json(&add("TEST-SKU-123", 2))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["idempotent-replayed"],
        "true",
        "the cart kept the key's outcome"
    );
    assert_eq!(resp.headers()["etag"], etag, "the original version");
    let (status, reply) = json(resp).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(lines(&reply["result"]), [("TEST-SKU-123".into(), 2)]);
    // The same key with another request is refused there too, though it never saw the key.
    let resp = http
        .post(format!("{base}/v1/carts/{id}/commands"))
        .header("idempotency-key", "k-1")
        .json(&serde_json::json!({"type": "ClearCart"}))
        .send()
        .await
        .unwrap();
    assert_error(
        &json(resp).await,
        422,
        "idempotency_key_reused",
        "different request",
    );
    other.stop().await.unwrap();

    assert_eq!(stack.events("default", &id).await.len(), 1, "one effect");

    // The same key with another request is refused. A refusal by the cart applied nothing
    // and is kept with it (a message without events): its retry gets it again, marked as
    // replayed, and the key is taken.
    let got = json(send("k-1", add("TEST-SKU-123", 3)).await.unwrap()).await;
    assert_error(&got, 422, "idempotency_key_reused", "different request");
    let first = send("k-2", add("NOPE", 1)).await.unwrap();
    assert!(first.headers().get("idempotent-replayed").is_none());
    let refused = json(first).await;
    assert_error(&refused, 404, "unknown_sku", "NOPE");
    let resp = send("k-2", add("NOPE", 1)).await.unwrap();
    assert_eq!(resp.headers()["idempotent-replayed"], "true");
    assert_eq!(json(resp).await, refused);
    let got = json(send("k-2", add("TEST-SKU-123", 1)).await.unwrap()).await;
    assert_error(&got, 422, "idempotency_key_reused", "different request");
    let events = stack.events("default", &id).await;
    assert_eq!(events.len(), 2, "the refusal is recorded");
    let recorded = cart_domain::EventMessage::from_json(&events[1].payload).unwrap();
    assert!(recorded.events.is_empty(), "{recorded:?}");
    assert_eq!(recorded.refused.unwrap().refusal.code, "unknown_sku");
    // A keyed request that changes nothing is kept (a message without events), so the key
    // cannot be used for another request afterwards.
    let noop = json(
        send("k-3", json!({"type": "SetUser", "userId": null}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(noop.0, 200, "{}", noop.1);
    let events = stack.events("default", &id).await;
    assert_eq!(events.len(), 3, "the no-op is recorded");
    let got = json(send("k-3", add("TEST-SKU-123", 1)).await.unwrap()).await;
    assert_error(&got, 422, "idempotency_key_reused", "different request");
}

#[tokio::test]
async fn etags_and_preconditions() {
    let Some((stack, http, id)) = stack_with_cart().await else {
        return;
    };
    let cart_url = stack.url(&format!("/v1/carts/{id}"));
    let commands = format!("{cart_url}/commands");

    let resp = http
        .post(&commands)
        .json(&add("TEST-SKU-123", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let version: u64 = etag.trim_matches('"').parse().unwrap();
    assert!(version > 0);

    let resp = http.get(&cart_url).send().await.unwrap();
    assert_eq!(resp.headers()["etag"].to_str().unwrap(), etag);
    let resp = http
        .get(&cart_url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    assert_eq!(resp.headers()["etag"].to_str().unwrap(), etag);
    let resp = http
        .get(&cart_url)
        .header("if-none-match", "\"0\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let stale = format!("\"{}\"", version + 1000);
    for (if_match, status, code, needle) in [
        (stale.as_str(), 412, "precondition_failed", "If-Match"),
        ("\"0\"", 412, "precondition_failed", "version"),
        ("yesterday", 400, "invalid_argument", "If-Match"),
    ] {
        let req = http.post(&commands).header("if-match", if_match);
        let got = call(req.json(&add("TEST-SKU-456", 1))).await;
        assert_error(&got, status, code, needle);
    }
    assert_eq!(
        stack.events("default", &id).await.len(),
        1,
        "nothing applied"
    );

    let resp = http
        .post(&commands)
        .header("if-match", &etag)
        .json(&add("TEST-SKU-456", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_ne!(resp.headers()["etag"].to_str().unwrap(), etag);
}

/// Two subscription details without ids in one atomic list are two details (each position
/// gets its own id), and a retry of the request under the same key names the same two.
#[tokio::test]
async fn id_less_subscription_details_in_one_list_are_distinct_and_stable() {
    let Some((stack, http, id)) = stack_with_cart().await else {
        return;
    };
    let details = |plan: &str| {
        json!({"type": "UpsertSubscriptionDetails", "offeringCode": plan,
            "signingType": "bankid", "data": {"plan": plan}})
    };
    let body = json!({"commands": [details("5G"), details("FIBER")], "atomic": true});
    let send = || {
        http.post(stack.url(&format!("/v1/carts/{id}/commands")))
            .header("idempotency-key", "two-details")
            .json(&body)
            .send()
    };
    let (status, first) = json(send().await.unwrap()).await;
    assert_eq!(status, 200, "{first}");
    let ids = |reply: &Value| -> Vec<String> {
        reply["result"]["subscriptionDetails"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(ids(&first).len(), 2, "{first}");
    let (status, again) = json(send().await.unwrap()).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(ids(&again), ids(&first), "a retry names the same details");
    assert_eq!(
        stack.events("default", &id).await.len(),
        1,
        "and applies once"
    );
}

/// A one-by-one list decides each command on its own and keeps nothing of a refused one, so it
/// cannot hold an Idempotency-Key: keyed, it is refused before anything applies (otherwise a
/// later request under the key would apply, or apply in part and then be refused).
#[tokio::test]
async fn a_one_by_one_list_with_an_idempotency_key_is_refused_whole() {
    let Some((stack, http, id)) = stack_with_cart().await else {
        return;
    };
    let before = stack.events("default", &id).await.len();
    let got = call(
        http.post(stack.url(&format!("/v1/carts/{id}/commands")))
            .header("idempotency-key", "list-1")
            .json(&json!({"atomic": false, "commands": [
                {"type": "RemoveItem", "lineId": 99},
                add("TEST-SKU-123", 1)]})),
    )
    .await;
    assert_error(&got, 400, "invalid_argument", "atomic");
    assert_eq!(
        stack.events("default", &id).await.len(),
        before,
        "nothing applied"
    );
}

/// A one-by-one list reports per command what the cart decides, but a bad value anywhere in
/// it refuses the whole request before anything is applied (before, the commands ahead of it
/// were stored and the 5 KB value came back in the reply).
#[tokio::test]
async fn a_one_by_one_list_with_a_bad_value_is_refused_whole() {
    let Some((stack, http, id)) = stack_with_cart().await else {
        return;
    };
    let long = "S".repeat(5000);
    let got = call(
        http.post(stack.url(&format!("/v1/carts/{id}/commands")))
            .json(&json!({"atomic": false, "commands": [
                add("TEST-SKU-123", 1),
                {"type": "AddItem", "sku": long, "quantity": 1}]})),
    )
    .await;
    assert_error(&got, 400, "invalid_argument", "commands[1]: sku");
    assert!(
        !got.1.to_string().contains(&long),
        "the value is not echoed: {}",
        got.1
    );
    assert!(
        stack.events("default", &id).await.is_empty(),
        "nothing applied"
    );
}

/// A one-by-one list is admitted by the cart's rate limit as a whole before its first command
/// is sent: a list the cart's burst cannot take is refused with nothing applied (before, its
/// first commands were stored and the rest answered 429 inside a 200, and a retry of the list
/// applied the first ones again).
#[tokio::test]
async fn a_one_by_one_list_is_rate_limited_whole() {
    let Some(stack) = stack_with(|c| {
        c.cart_rate_per_sec = 1;
        c.cart_rate_burst = 3;
    })
    .await
    else {
        return;
    };
    let http = reqwest::Client::new();
    let id = create(&stack, &http).await;
    let list = |n: usize| json!({"atomic": false, "commands": vec![add("TEST-SKU-123", 1); n]});
    let commands = stack.url(&format!("/v1/carts/{id}/commands"));
    let got = call(http.post(&commands).json(&list(4))).await;
    assert_error(&got, 422, "limit_exceeded", "at most 3");
    assert!(
        stack.events("default", &id).await.is_empty(),
        "nothing applied"
    );

    let (status, reply) = call(http.post(&commands).json(&list(3))).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(lines(&reply["result"]), [("TEST-SKU-123".to_owned(), 3)]);
}

/// `If-Match` on a one-by-one list is its first command's: when the first fails, the others
/// are not sent (before, only a failed precondition stopped them, and any other failure of
/// the first let the rest run unconditioned).
#[tokio::test]
async fn a_one_by_one_list_stops_when_its_if_matched_first_command_fails() {
    let Some((stack, http, id)) = stack_with_cart().await else {
        return;
    };
    let commands = stack.url(&format!("/v1/carts/{id}/commands"));
    let added = http.post(&commands).json(&add("TEST-SKU-123", 1)).send();
    let added = added.await.unwrap();
    assert_eq!(added.status(), 200);
    let got = call(
        http.post(&commands)
            .header("if-match", added.headers()["etag"].clone())
            .json(&json!({"atomic": false, "commands": [
                {"type": "RemoveItem", "lineId": 99},
                {"type": "ClearCart"}]})),
    )
    .await;
    assert_error(&got, 404, "unknown_line", "99");
    assert_eq!(
        stack.events("default", &id).await.len(),
        1,
        "the cart is not cleared"
    );
}

#[tokio::test]
async fn command_lists_atomic_or_one_by_one() {
    let Some((stack, http, id)) = stack_with_cart().await else {
        return;
    };
    let commands = stack.url(&format!("/v1/carts/{id}/commands"));
    let post = |body: Value| http.post(&commands).json(&body).send();

    // Atomic (the default): one bad command refuses all.
    let got = json(
        post(json!({"commands": [add("TEST-SKU-123", 1), add("NOPE", 1)]}))
            .await
            .unwrap(),
    )
    .await;
    assert_error(&got, 404, "unknown_sku", "NOPE");
    assert!(stack.events("default", &id).await.is_empty());

    let (status, reply) = json(
        post(json!({"commands": [add("TEST-SKU-123", 1), add("TEST-SKU-456", 2)], "atomic": true}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["mutations"].as_array().unwrap().len(), 2);
    assert_eq!(stack.events("default", &id).await.len(), 1, "one commit");

    // One by one: each reports its own outcome.
    let (status, reply) = json(
        post(json!({"atomic": false, "commands": [
            add("TEST-SKU-AAA", 1),
            {"type": "ChangeQuantity", "lineId": 999, "quantity": 1},
            {"type": "ApplyVoucher", "code": "WELCOME10"}]}))
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let m = reply["mutations"].as_array().unwrap();
    assert!(m[0].get("error").is_none());
    assert_eq!(m[1]["type"], "ChangeQuantity");
    assert_eq!(m[1]["error"]["code"], "unknown_line");
    assert_eq!(m[1]["error"]["statusCode"], 404);
    assert!(m[1]["error"]["message"].as_str().unwrap().contains("999"));
    assert_eq!(m[1]["mutation"]["lineId"], 999);
    assert!(m[2].get("error").is_none(), "{}", m[2]);
    assert_eq!(reply["result"]["vouchers"][0]["code"], "WELCOME10");
    assert_eq!(lines(&reply["result"]).len(), 3);

    // Bad bodies: the field, the internal type, the index.
    for (body, needle) in [
        (
            json!({"type": "ConfirmOrder", "providerOrderId": "p", "orderReference": "o"}),
            "ConfirmOrder is an internal command",
        ),
        (
            json!({"commands": [add("TEST-SKU-123", 1), {"type": "RecordProviderOrder"}]}),
            "commands[1].type: RecordProviderOrder",
        ),
        (
            json!({"type": "AddItem", "sku": "TEST-SKU-123", "quantity": 1, "qty": 2}),
            "qty: unknown field qty",
        ),
        (
            json!({"commands": [add("TEST-SKU-123", -1)]}),
            "commands[0].quantity: invalid value: integer -1",
        ),
        (json!({"commands": [], "atomic": true}), "commands"),
    ] {
        let got = json(post(body).await.unwrap()).await;
        assert_error(&got, 400, "invalid_argument", needle);
    }
    let got = call(
        http.post(stack.url("/v1/carts/a.b/commands"))
            .json(&add("TEST-SKU-123", 1)),
    )
    .await;
    assert_error(&got, 400, "invalid_argument", "cart_id");
    assert_eq!(stack.events("default", &id).await.len(), 3);

    // A new cart is empty: lines sent with its creation are refused, not dropped.
    let got = call(
        http.post(stack.url("/v1/carts"))
            .json(&json!({"commands": [add("TEST-SKU-123", 1)], "pad": "a".repeat(5000)})),
    )
    .await;
    assert_error(&got, 400, "invalid_argument", "takes no body");
    assert_error(&got, 400, "invalid_argument", "unknown field commands");
    let empty = call(http.post(stack.url("/v1/carts")).body(" { } ")).await;
    assert_eq!(empty.0, 201, "{}", empty.1);
}

/// Reads the next complete server-sent event (`id`, `event`, `data`), skipping comments.
async fn next_event(
    resp: &mut reqwest::Response,
    buf: &mut String,
) -> Option<(String, String, String)> {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut id, mut event, mut data) =
                (String::new(), "message".to_owned(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if data.is_empty() {
                continue; // keep-alive comment
            }
            return Some((id, event, data));
        }
        let chunk = tokio::time::timeout(WAIT, resp.chunk())
            .await
            .expect("an event in time")
            .ok()??;
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn events_stream_each_commit_and_end_with_the_upstream() {
    let Some(stack) = stack_with(|c| c.sse_keep_alive_secs = 1).await else {
        return;
    };
    let http = reqwest::Client::new();
    let id = create(&stack, &http).await;
    let mut resp = http
        .get(stack.url(&format!("/v1/carts/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut buf = String::new();
    let (version, _, data) = next_event(&mut resp, &mut buf).await.unwrap();
    assert_eq!(version, "0");
    assert_eq!(
        serde_json::from_str::<Value>(&data).unwrap()["id"],
        id.as_str()
    );

    let r = http
        .post(stack.url(&format!("/v1/carts/{id}/commands")))
        .json(&add("TEST-SKU-123", 1))
        .send()
        .await
        .unwrap();
    let etag = r.headers()["etag"]
        .to_str()
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let (version, event, data) = next_event(&mut resp, &mut buf).await.unwrap();
    assert_eq!((version, event.as_str()), (etag, "message"));
    let cart: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(lines(&cart), [("TEST-SKU-123".into(), 1)]);

    // Keep-alive comments flow while nothing changes.
    let quiet = tokio::time::timeout(Duration::from_secs(5), resp.chunk()).await;
    let comment = quiet.expect("keep-alive within 5 s").unwrap().unwrap();
    assert!(std::str::from_utf8(&comment).unwrap().starts_with(':'));

    // The aggregate stops: the upstream stream ends, and so does the event stream.
    let Stack {
        aggregate,
        gateway,
        nats,
        ..
    } = stack;
    aggregate.drain().await.unwrap();
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(_chunk) = resp.chunk().await.unwrap() {}
    })
    .await;
    assert!(ended.is_ok(), "the event stream ended");
    gateway.stop().await.unwrap();
    drop(nats);
}

/// Every command a client may send crosses the whole path (`/v1` → gRPC as domain JSON → the
/// aggregate decides) in its domain JSON form: each example, sent to a cart with line 1 and
/// delivery 1, is applied or refused by a business rule, never as a bad request. A new command
/// needs no test here: its entry in `Command::examples()` is sent.
#[tokio::test]
async fn every_client_command_reaches_the_aggregate_and_is_decided() {
    let Some(stack) = stack().await else { return };
    let http = reqwest::Client::new();
    let mut applied = 0;
    for command in cart_domain::Command::examples() {
        if gateway::v1::command_body::INTERNAL.contains(&command.name()) {
            continue;
        }
        let id = create(&stack, &http).await;
        let url = stack.url(&format!("/v1/carts/{id}/commands"));
        let ready = json!({"commands": [add("TEST-SKU-123", 1),
            {"type": "AddDelivery", "provider": "standard"}]});
        let (status, reply) = json(http.post(&url).json(&ready).send().await.unwrap()).await;
        assert_eq!(status, 200, "{reply}");
        let body = serde_json::to_value(&command).unwrap();
        let (status, reply) = json(http.post(&url).json(&body).send().await.unwrap()).await;
        match status {
            200 => {
                assert_eq!(reply["mutations"][0]["type"], command.name(), "{reply}");
                applied += 1;
            }
            404 | 409 | 422 => assert_ne!(reply["code"], "invalid_argument", "{body}: {reply}"),
            _ => panic!("{body}: {status} {reply}"),
        }
    }
    assert!(applied >= 10, "only {applied} examples applied");
}
