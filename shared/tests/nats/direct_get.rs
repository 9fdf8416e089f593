use std::ops::Range;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::{Client, HeaderMap};
use shared::nats::direct_get::MAX_BATCH;
use shared::nats::{
    BatchGetOptions, DirectGetError, NatsResourceSettings, SubjectPage, ensure_stream, policies,
    read_subject_after, read_subject_page,
};
use shared::nats_or_skip;
use shared::test_support::NatsServer;

async fn cart_events(js: &jetstream::Context) -> stream::Stream {
    ensure_stream(js, &policies::cart_events(&NatsResourceSettings::default()))
        .await
        .unwrap()
}

/// A server with `CART_EVENTS` in place (kept alive by the first value), a JetStream context
/// and a client.
async fn with_cart_events() -> Option<(NatsServer, jetstream::Context, Client)> {
    let nats = nats_or_skip!()?;
    let js = nats.jetstream().await;
    cart_events(&js).await;
    let client = nats.client().await;
    Some((nats, js, client))
}

/// Publishes messages `range` (payload `<subject>#<i>`, unique Msg-Id) on `subject`; returns
/// their sequences.
async fn publish(js: &jetstream::Context, subject: &str, range: Range<usize>) -> Vec<u64> {
    let mut acks = Vec::with_capacity(range.len());
    for i in range {
        let mut h = HeaderMap::new();
        h.insert("tenant-id", "acme");
        h.insert("Nats-Msg-Id", uuid::Uuid::new_v4().to_string());
        acks.push(
            js.publish_with_headers(subject.to_owned(), h, format!("{subject}#{i}").into())
                .await
                .unwrap(),
        );
    }
    let mut seqs = Vec::with_capacity(acks.len());
    for ack in acks {
        seqs.push(ack.await.unwrap().sequence);
    }
    seqs
}

#[tokio::test]
async fn reads_one_subject_among_interleaved_ones() {
    let Some((_nats, js, client)) = with_cart_events().await else {
        return;
    };
    let mut mine = Vec::new();
    for round in 0..20 {
        mine.extend(publish(&js, "cart.events.acme.c1", round..round + 1).await);
        publish(&js, "cart.events.acme.c2", 0..2).await;
        publish(&js, &format!("cart.events.other.c{round}"), 0..1).await;
    }
    let opts = BatchGetOptions {
        batch: 7, // several round trips
        ..Default::default()
    };
    let got = read_subject_after(&client, "CART_EVENTS", "cart.events.acme.c1", 0, &opts)
        .await
        .unwrap();
    assert_eq!(got.iter().map(|e| e.sequence).collect::<Vec<_>>(), mine);
    for (i, e) in got.iter().enumerate() {
        assert_eq!(e.subject, "cart.events.acme.c1");
        assert_eq!(
            e.payload.as_ref(),
            format!("cart.events.acme.c1#{i}").as_bytes()
        );
        assert_eq!(e.headers.get("tenant-id").unwrap().as_str(), "acme");
        // Server-added direct-get headers are stripped; what was published remains.
        assert!(e.headers.get("Nats-Sequence").is_none());
        assert!(e.headers.get("Nats-Num-Pending").is_none());
        assert!(e.headers.get("Nats-Msg-Id").is_some());
        assert!(e.time > time::OffsetDateTime::now_utc() - time::Duration::minutes(5));
    }
}

#[tokio::test]
async fn reads_a_thousand_messages_and_from_the_middle() {
    let Some((_nats, js, client)) = with_cart_events().await else {
        return;
    };
    let seqs = publish(&js, "cart.events.acme.big", 0..1_000).await;

    for batch in [MAX_BATCH, 256, 5_000] {
        let opts = BatchGetOptions {
            batch,
            ..Default::default()
        };
        let all = read_subject_after(&client, "CART_EVENTS", "cart.events.acme.big", 0, &opts)
            .await
            .unwrap();
        assert_eq!(all.len(), 1_000, "batch {batch}");
        assert_eq!(all.iter().map(|e| e.sequence).collect::<Vec<_>>(), seqs);
    }

    let middle = seqs[499];
    let tail = read_subject_after(
        &client,
        "CART_EVENTS",
        "cart.events.acme.big",
        middle,
        &BatchGetOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(tail.len(), 500);
    assert_eq!(tail[0].sequence, seqs[500]);
    assert_eq!(tail.last().unwrap().sequence, seqs[999]);

    let none_after_last = read_subject_after(
        &client,
        "CART_EVENTS",
        "cart.events.acme.big",
        seqs[999],
        &BatchGetOptions::default(),
    )
    .await
    .unwrap();
    assert!(none_after_last.is_empty());
}

#[tokio::test]
async fn empty_subject_is_an_empty_result() {
    let Some((_nats, js, client)) = with_cart_events().await else {
        return;
    };
    let opts = BatchGetOptions::default();
    let got = read_subject_after(&client, "CART_EVENTS", "cart.events.acme.none", 0, &opts)
        .await
        .unwrap();
    assert!(got.is_empty());
    publish(&js, "cart.events.acme.other", 0..3).await;
    let got = read_subject_after(&client, "CART_EVENTS", "cart.events.acme.none", 0, &opts)
        .await
        .unwrap();
    assert!(got.is_empty());
}

#[tokio::test]
async fn stream_without_direct_get_fails_fast_and_clearly() {
    let Some(nats) = nats_or_skip!() else { return };
    let js = nats.jetstream().await;
    js.create_stream(stream::Config {
        name: "NO_DIRECT".into(),
        subjects: vec!["nodirect.>".into()],
        allow_direct: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let client = nats.client().await;
    let opts = BatchGetOptions {
        timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let err = read_subject_after(&client, "NO_DIRECT", "nodirect.a", 0, &opts)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DirectGetError::NoResponders { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("NO_DIRECT"), "{err}");
}

#[tokio::test]
async fn wildcards_and_bad_stream_names_are_rejected_locally() {
    let Some(nats) = nats_or_skip!() else { return };
    let client = nats.client().await;
    let opts = BatchGetOptions::default();
    for subject in ["cart.events.acme.*", "cart.events.>", "", "a..b"] {
        let err = read_subject_after(&client, "CART_EVENTS", subject, 0, &opts)
            .await
            .unwrap_err();
        assert!(
            matches!(err, DirectGetError::InvalidRequest { .. }),
            "{subject}"
        );
    }
    let err = read_subject_after(&client, "A.B", "x", 0, &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, DirectGetError::InvalidRequest { .. }));
}

/// A cart's history a page at a time: `limit` messages after a cursor, `pending` telling
/// whether more follow; a `*` filter reads one cart id in every tenant, in stream order.
#[tokio::test]
async fn pages_of_one_subject_or_one_id_in_every_tenant() {
    let Some((_nats, js, client)) = with_cart_events().await else {
        return;
    };
    let mut mine = Vec::new();
    let mut every_tenant = Vec::new();
    for round in 0..3 {
        let seqs = publish(&js, "cart.events.acme.h1", round * 2..round * 2 + 2).await;
        mine.extend(&seqs);
        every_tenant.extend(seqs);
        every_tenant.extend(publish(&js, "cart.events.other.h1", 0..1).await);
        publish(&js, "cart.events.acme.h2", 0..2).await;
    }
    let t = Duration::from_secs(5);
    let read = |filter: &'static str, after: u64, limit: usize| {
        read_subject_page(&client, "CART_EVENTS", filter, after, limit, t)
    };
    let seqs = |page: &SubjectPage| page.events.iter().map(|e| e.sequence).collect::<Vec<_>>();

    let first = read("cart.events.acme.h1", 0, 4).await.unwrap();
    assert_eq!(seqs(&first), mine[..4]);
    assert_eq!(first.pending, 2);
    let rest = read("cart.events.acme.h1", mine[3], 4).await.unwrap();
    assert_eq!(seqs(&rest), mine[4..]);
    assert_eq!(rest.pending, 0);
    let past_the_end = read("cart.events.acme.h1", mine[5], 4).await.unwrap();
    assert_eq!((past_the_end.events.len(), past_the_end.pending), (0, 0));
    let nothing = read("cart.events.acme.none", 0, 4).await.unwrap();
    assert_eq!((nothing.events.len(), nothing.pending), (0, 0));

    let all = read("cart.events.*.h1", 0, 100).await.unwrap();
    assert_eq!(seqs(&all), every_tenant);
    assert_eq!(all.pending, 0);
    let tenants: Vec<&str> = all.events.iter().map(|e| &e.subject[12..]).collect();
    assert_eq!(tenants.iter().filter(|s| **s == "other.h1").count(), 3);

    // `>` and empty tokens are refused before anything is sent.
    for filter in ["cart.events.>", "cart..h1", ""] {
        let err = read_subject_page(&client, "CART_EVENTS", filter, 0, 1, t)
            .await
            .unwrap_err();
        assert!(
            matches!(err, DirectGetError::InvalidRequest { .. }),
            "{filter}"
        );
    }
}

/// A whole KV bucket, as placement reads it: the latest entry of every key (a deleted key as
/// its delete marker), over several pages read at one ceiling, without a consumer.
#[tokio::test]
async fn last_per_subject_lists_a_bucket_in_pages_with_its_delete_markers() {
    use shared::nats::direct_get::read_last_per_subject;
    let Some(nats) = nats_or_skip!() else { return };
    let js = nats.jetstream().await;
    let kv = js
        .create_key_value(jetstream::kv::Config {
            bucket: "LISTED".into(),
            history: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut latest = std::collections::BTreeMap::new();
    for round in 0..3 {
        for k in 0..5 {
            let rev = kv
                .put(format!("k{k}"), format!("v{k}.{round}").into())
                .await
                .unwrap();
            latest.insert(format!("k{k}"), rev);
        }
    }
    kv.delete("k3").await.unwrap();
    assert!(
        kv.get("k3").await.unwrap().is_none(),
        "a deleted key reads as absent"
    );
    let client = nats.client().await;
    let opts = BatchGetOptions {
        batch: 2,
        ..Default::default()
    };
    let got = read_last_per_subject(&client, "KV_LISTED", "$KV.LISTED.>", &opts)
        .await
        .unwrap();
    let keys: Vec<&str> = got.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(keys.len(), 5, "one entry per key: {keys:?}");
    for e in &got {
        let key = e.subject.strip_prefix("$KV.LISTED.").unwrap();
        if key == "k3" {
            assert_eq!(e.headers.get("KV-Operation").unwrap().as_str(), "DEL");
            assert!(e.sequence > latest[key]);
        } else {
            assert_eq!(e.sequence, latest[key]);
            assert_eq!(e.payload.as_ref(), format!("v{}.2", &key[1..]).as_bytes());
        }
    }
    // An empty filter match is an empty result, not an error.
    let none = read_last_per_subject(&client, "KV_LISTED", "$KV.LISTED.nothing.>", &opts)
        .await
        .unwrap();
    assert!(none.is_empty());
}
