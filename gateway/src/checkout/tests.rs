use super::*;

async fn body(order: rpb::ProviderOrder) -> serde_json::Value {
    let resp = provider_order(order);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The pending page's script, run by Node.js with a browser's session storage, clock and
/// timers stubbed: the wait doubles on each reload within a minute, up to 30 s, and starts
/// again at `retryAfter` after a quiet minute. Skipped (loudly) without `node`.
#[test]
fn the_pending_page_backs_off_its_reloads() {
    let harness = format!(
        r#"
        const store = {{}}; let now = 1000000; const delays = [];
        globalThis.sessionStorage = {{
            getItem: k => (k in store ? store[k] : null),
            setItem: (k, v) => {{ store[k] = String(v); }},
        }};
        globalThis.Date = {{ now: () => now }};
        globalThis.window = {{ location: {{ reload: () => {{}} }} }};
        globalThis.setTimeout = (f, ms) => {{ delays.push(ms); f(); }};
        const page = () => {{ {script} }};
        for (let i = 0; i < 7; i++) {{ page(); now += 1000; }}
        now += 61000; page();
        console.log(JSON.stringify(delays));
        "#,
        script = reload_script(1)
    );
    let out = match std::process::Command::new("node")
        .arg("-e")
        .arg(&harness)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("SKIPPED: the pending page's script needs node to run ({e})");
            return;
        }
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let delays: Vec<u64> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(delays, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 1000]);
}

#[tokio::test]
async fn the_shopper_gets_the_order_with_a_snippet_and_without_the_merchants_fields() {
    let raw = serde_json::json!({
        "order_id": "o-1",
        "status": "checkout_incomplete",
        "html_snippet": "<div>pay</div>",
        "order_lines": [{"reference": "SKU-1"}],
        "merchant_urls": {"validation": "https://shop/cart/validation?token=secret"},
        "merchant_data": "{\"tenant\":\"t\"}",
    });
    let got = body(rpb::ProviderOrder {
        raw_json: raw.to_string(),
        ..Default::default()
    })
    .await;
    assert_eq!(got["html_snippet"], "<div>pay</div>");
    assert_eq!(got["order_lines"], raw["order_lines"]);
    assert!(got.get("merchant_urls").is_none(), "{got}");
    assert!(got.get("merchant_data").is_none(), "{got}");

    // A provider order without a snippet, or no JSON at all: the recorded one.
    for raw_json in [r#"{"order_id":"o-1"}"#, "", "[1]"] {
        let got = body(rpb::ProviderOrder {
            order_id: "o-1".into(),
            html_snippet: "<div>recorded</div>".into(),
            raw_json: raw_json.into(),
            ..Default::default()
        })
        .await;
        assert_eq!(got["html_snippet"], "<div>recorded</div>", "{raw_json}");
        assert_eq!(got["order_id"], "o-1", "{raw_json}");
    }
}
