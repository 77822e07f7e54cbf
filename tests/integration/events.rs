//! The event log: registrations, payments, errors and operator actions, with a severity,
//! read by operators at `GET /admin/events`, kept for `log.event_retention`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::on_both_backends;
use crate::support::*;

on_both_backends!(the_event_log_keeps_what_operators_look_back_on_for_a_while);

async fn events(app: &TestApp, query: &str) -> Vec<Value> {
    let response = app
        .admin(reqwest::Method::GET, &format!("/admin/events{query}"))
        .await;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let body: Value = response.json().await.expect("JSON");
    body["events"].as_array().cloned().unwrap_or_default()
}

async fn the_event_log_keeps_what_operators_look_back_on_for_a_while(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        TestOptions {
            wrap_llm: Some(Box::new(|inner| {
                Arc::new(PanicOnTrigger {
                    inner,
                    trigger: "PANIC",
                })
            })),
            ..TestOptions::default()
        },
    )
    .await;
    let user = 33001;
    app.start_dialog(user, "mira").await;
    let charge = app.user_buys(user, "intense_mode").await;
    let refund = app
        .admin(
            reqwest::Method::POST,
            &format!("/admin/payments/{charge}/refund"),
        )
        .await;
    assert_eq!(refund.status(), reqwest::StatusCode::OK);
    let block = app
        .admin(reqwest::Method::POST, &format!("/admin/users/{user}/block"))
        .await;
    assert_eq!(block.status(), reqwest::StatusCode::OK);
    app.user_says(user, "PANIC please").await;
    wait_until_async("the crash logged", || async {
        !events(&app, "?severity=error").await.is_empty()
    })
    .await;

    let all = events(&app, "").await;
    let kinds: Vec<&str> = all
        .iter()
        .filter_map(|event| event["kind"].as_str())
        .collect();
    for kind in ["registration", "payment", "operator", "error"] {
        assert!(kinds.contains(&kind), "{kind} is logged: {all:?}");
    }
    let registration = all
        .iter()
        .find(|event| event["kind"] == "registration")
        .expect("a registration");
    assert_eq!(registration["user_id"], user);
    assert_eq!(registration["severity"], "info");
    let payments: Vec<&str> = all
        .iter()
        .filter(|event| event["kind"] == "payment")
        .filter_map(|event| event["detail"].as_str())
        .collect();
    assert!(
        payments.iter().any(|detail| detail.starts_with("paid")),
        "{payments:?}"
    );
    assert!(
        payments.iter().any(|detail| detail.starts_with("refunded")),
        "{payments:?}"
    );
    let operator: Vec<&str> = all
        .iter()
        .filter(|event| event["kind"] == "operator")
        .filter_map(|event| event["detail"].as_str())
        .collect();
    assert!(
        operator.iter().any(|detail| detail.contains(&charge)),
        "{operator:?}"
    );
    assert!(
        operator.iter().any(|detail| detail.contains("blocked")),
        "{operator:?}"
    );
    let errors = events(&app, "?severity=error").await;
    assert!(
        errors.iter().all(|event| event["kind"] == "error"),
        "{errors:?}"
    );
    assert!(
        !all.iter()
            .any(|event| event.to_string().contains("PANIC please")),
        "no message text in the event log"
    );
    assert_eq!(events(&app, "?kind=payment&limit=1").await.len(), 1);
    let refused = app
        .admin(reqwest::Method::GET, "/admin/events?severity=fatal")
        .await;
    assert_eq!(refused.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);

    // Kept for log.event_retention (90 days), then pruned.
    let retention = app.settings.log.event_retention;
    app.clock.advance(retention - Duration::from_secs(3600));
    app.database.prune_events(retention).await.expect("pruned");
    assert_eq!(
        events(&app, "").await.len(),
        all.len(),
        "nothing is due yet"
    );
    app.clock.advance(Duration::from_secs(2 * 3600));
    let pruned = app.database.prune_events(retention).await.expect("pruned");
    assert!(pruned >= all.len(), "{pruned}");
    assert!(events(&app, "").await.is_empty());
    app.stop().await;
}
