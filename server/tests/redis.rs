//! Several instances sharing the hub through a real Redis, which the tests kill and restart;
//! the hub tests run on both of the server's paths (see `common::on_both_paths`).

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use common::{eventually, mercure::*, RedisProcess, TestServer};
use futures_util::StreamExt;
use serde_json::json;
use server::update::NewUpdate;

async fn instance(redis: &RedisProcess) -> TestServer {
    start(&["--broker", &redis.url()]).await
}

/// Publishes on `server` (with a token for that instance's audience).
async fn publish_on(server: &TestServer, topic: &str, data: &str) -> reqwest::Response {
    publish(
        server,
        &publish_all(server),
        &[("topic", topic), ("data", data)],
    )
    .await
}

on_both_paths! {
    #[tokio::test]
    async fn an_update_published_on_any_instance_reaches_all_once_in_one_order() {
        let redis = RedisProcess::start().await;
        let a = instance(&redis).await;
        let b = instance(&redis).await;
        let mut on_a = subscribe(&a, &[("match", "/shared")], None).await;
        let mut on_b = subscribe(&b, &[("match", "/shared")], None).await;
        subscribers(&a, 1).await;
        subscribers(&b, 1).await;

        let mut ids = Vec::new();
        for n in 0..20 {
            let server = if n % 2 == 0 { &a } else { &b };
            let response = publish_on(server, "/shared", &format!("update {n}")).await;
            assert_eq!(response.status(), 200);
            ids.push(response.text().await.expect("id"));
        }
        for events in [&mut on_a, &mut on_b] {
            let mut seen = Vec::new();
            for _ in 0..ids.len() {
                seen.push(next(events).await.id);
            }
            assert_eq!(seen, ids);
            nothing_within(events, Duration::from_millis(200)).await;
        }
    }

    #[tokio::test]
    async fn a_subscriber_resumes_on_another_instance() {
        let redis = RedisProcess::start().await;
        let a = instance(&redis).await;
        let b = instance(&redis).await;
        let mut first = subscribe(&a, &[("match", "/resume")], None).await;
        subscribers(&a, 1).await;
        let mut ids = Vec::new();
        for n in 0..5 {
            ids.push(
                publish_on(&a, "/resume", &n.to_string())
                    .await
                    .text()
                    .await
                    .expect("id"),
            );
        }
        assert_eq!(next(&mut first).await.id, ids[0]);
        assert_eq!(next(&mut first).await.id, ids[1]);
        drop(first);
        for n in 5..8 {
            ids.push(
                publish_on(&b, "/resume", &n.to_string())
                    .await
                    .text()
                    .await
                    .expect("id"),
            );
        }
        let response = subscribe_request(&b, &[("match", "/resume")], None, Some(&ids[1])).await;
        assert_eq!(response.headers()["mercure-last-event-id"], ids[1].as_str());
        let mut resumed = events(response);
        for id in &ids[2..] {
            assert_eq!(&next(&mut resumed).await.id, id);
        }

        // An instance started later loads the history from Redis.
        let c = instance(&redis).await;
        let mut late = subscribe(
            &c,
            &[("match", "/resume"), ("last_event_id", "earliest")],
            None,
        )
        .await;
        for id in &ids {
            assert_eq!(&next(&mut late).await.id, id);
        }
    }

    #[tokio::test]
    async fn while_redis_is_down_publishing_answers_503_and_subscribers_stay() {
        let mut redis = RedisProcess::start().await;
        let a = instance(&redis).await;
        let health_token = subscriber_token(
            &a,
            json!([detail(
                &["subscribe"],
                json!([{ "match": "/.well-known/mercure/health" }])
            )]),
        );
        let mut health = subscribe(
            &a,
            &[("match", "/.well-known/mercure/health"), ("match", "/t")],
            Some(&health_token),
        )
        .await;
        let mut plain = subscribe(&a, &[("match", "/t")], None).await;
        subscribers(&a, 2).await;
        let stored = publish_on(&a, "/t", "before").await;
        assert_eq!(stored.status(), 200);
        let stored = stored.text().await.expect("id");
        assert_eq!(next(&mut health).await.id, stored);
        assert_eq!(next(&mut plain).await.id, stored);

        redis.kill().await;
        let refused = publish_on(&a, "/t", "lost?").await;
        assert_eq!(refused.status(), 503);
        let message = refused.text().await.expect("body");
        assert!(message.contains("Redis"), "{message}");
        let notice = next(&mut health).await;
        assert_eq!(notice.event, "mercure");
        // A notice is never stored, so it carries no id: a browser that reconnects resumes
        // after the last update it read, not from an id the hub does not know.
        assert_eq!(notice.id, stored);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&notice.data).expect("json")["state"],
            "degraded"
        );
        // A page that connects now learns it at once.
        let mut late = subscribe(
            &a,
            &[("match", "/.well-known/mercure/health")],
            Some(&health_token),
        )
        .await;
        assert!(next(&mut late).await.data.contains("degraded"));
        assert_eq!(
            a.state.metrics.hub.open(),
            3,
            "subscribers keep their connections"
        );

        redis.spawn().await;
        assert!(
            eventually(Duration::from_secs(10), || async {
                !a.state.hub.hub.is_degraded()
            })
            .await,
            "the instance did not see Redis come back"
        );
        assert!(next(&mut health).await.data.contains("\"ok\""));
        let accepted = publish_on(&a, "/t", "back").await;
        assert_eq!(accepted.status(), 200);
        let id = accepted.text().await.expect("id");
        assert_eq!(next(&mut plain).await.id, id);
    }

    #[tokio::test]
    async fn a_redis_crash_under_load_loses_no_acknowledged_update() {
        let mut redis = RedisProcess::start().await;
        let a = instance(&redis).await;
        let b = instance(&redis).await;
        let mut reader = subscribe(&b, &[("match", "/load")], None).await;
        subscribers(&b, 1).await;

        // A steady publisher on A, recording what was acknowledged.
        let running = Arc::new(AtomicBool::new(true));
        let publisher = {
            let running = Arc::clone(&running);
            let token = publish_all(&a);
            let url = a.url("/.well-known/mercure");
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let (mut acknowledged, mut refused) = (Vec::new(), 0);
                let mut n = 0;
                while running.load(Ordering::Relaxed) {
                    n += 1;
                    let response = client
                        .post(&url)
                        .bearer_auth(&token)
                        .form(&[("topic", "/load"), ("data", &n.to_string())])
                        .send()
                        .await;
                    match response {
                        Ok(response) if response.status() == 200 => {
                            acknowledged.push(response.text().await.expect("id"))
                        }
                        Ok(response) => {
                            assert_eq!(response.status(), 503, "only 200 or 503");
                            refused += 1;
                        }
                        Err(error) => panic!("the instance must stay up: {error}"),
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (acknowledged, refused)
            })
        };

        tokio::time::sleep(Duration::from_millis(800)).await;
        redis.kill().await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        redis.spawn().await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        running.store(false, Ordering::Relaxed);
        let (acknowledged, refused) = publisher.await.expect("publisher");
        assert!(refused > 0, "the outage was not noticed");
        assert!(
            acknowledged.len() > 50,
            "too few updates went through: {}",
            acknowledged.len()
        );

        // Everything acknowledged arrives once, in order, on the other instance, over the same
        // connection that was open all along.
        // (A refused publish may still have been stored, so more may arrive than was
        // acknowledged: read until every acknowledged id is in.)
        let mut delivered: Vec<String> = Vec::new();
        let mut waiting: std::collections::HashSet<&String> = acknowledged.iter().collect();
        while !waiting.is_empty() {
            match tokio::time::timeout(Duration::from_secs(15), reader.next()).await {
                Ok(Some(Ok(event))) => {
                    waiting.remove(&event.id);
                    delivered.push(event.id);
                }
                other => panic!(
                    "stream ended or stalled after {} of {}: {other:?}",
                    delivered.len(),
                    acknowledged.len()
                ),
            }
        }
        let mut unique = delivered.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), delivered.len(), "an update arrived twice");
        let positions: Vec<usize> = acknowledged
            .iter()
            .map(|id| {
                delivered
                    .iter()
                    .position(|d| d == id)
                    .unwrap_or_else(|| panic!("{id} never arrived"))
            })
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "acknowledged updates arrived out of order"
        );
    }

    #[tokio::test]
    async fn updates_and_subscription_events_share_one_order_on_every_instance() {
        let redis = RedisProcess::start().await;
        let a = instance(&redis).await;
        let b = instance(&redis).await;
        let token = subscriber_token(
            &b,
            json!([detail(&["subscribe"], json!([{ "match": "*" }]))]),
        );
        let mut everything = subscribe(&b, &[("match", "*")], Some(&token)).await;
        subscribers(&b, 1).await;

        // Updates and subscription events stored back to back, many in the same millisecond.
        let broker = &a.state.hub.broker;
        let mut published = Vec::new();
        for n in 0..40 {
            let topic = if n % 2 == 0 {
                "/ordered".to_owned()
            } else {
                format!("/.well-known/mercure/subscriptions/exact/%2Fordered/urn:uuid:s{n}")
            };
            let update = NewUpdate {
                id: format!("urn:uuid:ordered-{n}"),
                topics: vec![topic],
                data: n.to_string(),
                kind: None,
                retry: None,
                private: n % 2 == 1,
            };
            published.push(update.id.clone());
            broker.publish(update).await.expect("stored");
        }

        // In Redis: no id is used twice across the two streams, and the ids follow the order
        // the entries were stored in.
        let client = redis::Client::open(redis.url()).expect("redis url");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis");
        let mut stored: Vec<((u64, u64), String)> = Vec::new();
        for key in ["pulse:updates", "pulse:presence"] {
            let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
                .arg(key)
                .arg("-")
                .arg("+")
                .query_async(&mut connection)
                .await
                .expect("XRANGE");
            for (entry_id, fields) in entries {
                let (ms, seq) = entry_id.split_once('-').expect("ms-seq");
                let position = (ms.parse().expect("ms"), seq.parse().expect("seq"));
                let update_id = fields
                    .iter()
                    .position(|field| field == "id")
                    .and_then(|at| fields.get(at + 1))
                    .expect("an id field")
                    .clone();
                stored.push((position, update_id));
            }
        }
        stored.sort();
        let positions: Vec<_> = stored.iter().map(|(position, _)| *position).collect();
        let mut unique = positions.clone();
        unique.dedup();
        assert_eq!(unique, positions, "an id used in both streams");
        let in_redis: Vec<&String> = stored
            .iter()
            .map(|(_, id)| id)
            .filter(|id| published.contains(id))
            .collect();
        assert_eq!(in_redis, published.iter().collect::<Vec<_>>());

        // The other instance hands them to its subscribers in that order.
        let mut seen = Vec::new();
        while seen.len() < published.len() {
            let event = next(&mut everything).await;
            if published.contains(&event.id) {
                seen.push(event.id);
            }
        }
        assert_eq!(seen, published);
    }

    #[tokio::test]
    async fn a_new_instance_finds_a_resumed_id_in_the_history_it_loads() {
        let redis = RedisProcess::start().await;
        let a = instance(&redis).await;
        let mut ids = Vec::new();
        for n in 0..30 {
            let response = publish_on(&a, "/loaded", &n.to_string()).await;
            assert_eq!(response.status(), 200);
            ids.push(response.text().await.expect("id"));
        }
        // A subscriber resuming on an instance that has only just started gets what follows
        // its id, not the whole history as if it were new.
        let b = instance(&redis).await;
        let response = subscribe_request(&b, &[("match", "/loaded")], None, Some(&ids[25])).await;
        assert_eq!(
            response.headers()["mercure-last-event-id"],
            ids[25].as_str()
        );
        let mut resumed = events(response);
        for id in &ids[26..] {
            assert_eq!(&next(&mut resumed).await.id, id);
        }
        nothing_within(&mut resumed, Duration::from_millis(300)).await;
    }

    #[tokio::test]
    async fn a_refusal_from_redis_answers_503_without_turning_the_hub_degraded() {
        let redis = RedisProcess::start().await;
        let a = instance(&redis).await;
        let client = redis::Client::open(redis.url()).expect("redis url");
        let mut admin = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis");
        let config = |name: &'static str, value: &'static str| {
            let mut command = redis::cmd("CONFIG");
            command.arg("SET").arg(name).arg(value);
            command
        };
        let _: () = config("maxmemory-policy", "noeviction")
            .query_async(&mut admin)
            .await
            .expect("policy");
        // Out of memory: Redis is up and answers, but refuses every write.
        let _: () = config("maxmemory", "1")
            .query_async(&mut admin)
            .await
            .expect("limit");
        let refused = publish_on(&a, "/full", "too much").await;
        assert_eq!(refused.status(), 503);
        let message = refused.text().await.expect("body");
        assert!(message.contains("refused"), "{message}");
        assert!(
            !a.state.hub.hub.is_degraded(),
            "Redis answered: pages are not told it is unreachable"
        );
        let _: () = config("maxmemory", "0")
            .query_async(&mut admin)
            .await
            .expect("no limit");
        assert_eq!(publish_on(&a, "/full", "fits").await.status(), 200);
    }
}

#[tokio::test]
async fn a_page_that_asks_who_watches_is_told_an_instance_does_not_know_them_all() {
    let redis = RedisProcess::start().await;
    let a = instance(&redis).await;
    let _watching = subscribe(&a, &[("match", "/topics/shared")], None).await;
    subscribers(&a, 1).await;
    // Each instance knows only its own subscribers: a list from one would make a page that
    // reconnected drop the watchers of the others, so the answer is "unknown".
    let answer: Option<Vec<String>> = reqwest::Client::new()
        .post(a.url("/api/watchers"))
        .header("accept", "application/json")
        .form(&[("topic", "shared")])
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON");
    assert_eq!(answer, None);
}
