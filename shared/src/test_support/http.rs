//! HTTP calls the services' tests make the same way everywhere: status and JSON of a reply, a
//! 200 asserted, a page as text, and waiting for a route to answer a status.

use std::time::Duration;

use serde_json::Value;

use super::wait_until;

/// Status and JSON body of a response (panics when the body is not JSON).
pub async fn json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text:?}"));
    (status, body)
}

/// Status and JSON body of the response to `req`.
pub async fn call(req: reqwest::RequestBuilder) -> (u16, Value) {
    json(req.send().await.unwrap()).await
}

/// The JSON body of the response to `req`, asserting it is a 200.
pub async fn ok(req: reqwest::RequestBuilder) -> Value {
    let (status, reply) = call(req).await;
    assert_eq!(status, 200, "{reply}");
    reply
}

/// The body of `GET url` as text (the metrics page).
pub async fn text(http: &reqwest::Client, url: &str) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

/// Waits up to `timeout` until `GET url` answers `status`; panics with `what` when it never
/// does.
pub async fn wait_for_status(
    http: &reqwest::Client,
    url: &str,
    status: u16,
    timeout: Duration,
    what: &str,
) {
    let answers = || async {
        http.get(url)
            .send()
            .await
            .is_ok_and(|r| r.status() == status)
    };
    wait_until(answers, timeout).await.expect(what);
}
