//! The session actor's tests, on the in-memory ports.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::ports::ChatId;
use crate::supervision::{KindPolicy, OverflowPolicy};
use crate::testing::*;

type Harness = SessionHarness;

fn harness(settings: SessionSettings, llm_delay: Duration) -> Harness {
    harness_with_llm(
        settings,
        EchoLlm {
            delay: llm_delay,
            ..EchoLlm::default()
        },
    )
}

fn harness_with_llm(settings: SessionSettings, llm: EchoLlm) -> Harness {
    harness_with(settings, llm, KindPolicy::default())
}

/// A harness whose LLM answers only as the test adds permits to the returned gate, so
/// a reply is surely in progress while the test acts.
fn gated(policy: KindPolicy) -> (Harness, Arc<tokio::sync::Semaphore>) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let llm = EchoLlm {
        gate: Some(gate.clone()),
        ..EchoLlm::default()
    };
    (harness_with(SessionSettings::default(), llm, policy), gate)
}

fn harness_with(settings: SessionSettings, llm: EchoLlm, policy: KindPolicy) -> Harness {
    SessionHarness::new(settings, llm, policy)
}

/// The persona's replies in a chat, as they read now.
fn replies(h: &Harness, chat: ChatId) -> Vec<String> {
    h.messenger
        .texts_to(chat)
        .into_iter()
        .filter(|text| text.starts_with("reply to"))
        .collect()
}

#[actix_rt::test]
async fn messages_of_one_user_are_answered_in_order_with_history() {
    let h = harness(SessionSettings::default(), Duration::from_millis(20));
    h.router.route(pick(1, "mira"));
    for index in 0..5 {
        h.router.route(text(1, &format!("m{index}")));
    }
    eventually("five replies", || replies(&h, 1).len() == 5).await;
    let texts = h.messenger.texts_to(1);
    assert_eq!(texts[0], "Dialog 1: Mira — First\n\nHi User1");
    let expected: Vec<String> = (0..5).map(|i| format!("reply to: m{i}")).collect();
    assert_eq!(texts[1..], expected[..]);
    let requests = h.llm.requests.lock().expect("lock");
    let last = requests.last().expect("requests");
    assert!(last.messages[0].content.contains("Keeps a lighthouse."));
    assert!(
        last.messages.iter().any(|m| m.content == "reply to: m3"),
        "history carried"
    );
    // The LLM reported no usage: tokens are estimated with tiktoken and stored.
    let (prompt, completion) = h.store.token_usage(1, 1);
    assert!(prompt > 0 && completion > 0, "{prompt} {completion}");
    h.router.stop();
}

#[actix_rt::test]
async fn a_panic_is_answered_and_other_sessions_on_the_arbiter_go_on() {
    let h = harness(SessionSettings::default(), Duration::from_millis(5));
    h.router.route(pick(1, "mira"));
    h.router.route(pick(2, "mira"));
    h.router.route(text(1, "PANIC"));
    h.router.route(text(2, "hello"));
    h.router.route(text(1, "still there?"));
    eventually("user 2 answered", || {
        h.messenger
            .texts_to(2)
            .contains(&"reply to: hello".to_owned())
    })
    .await;
    eventually("user 1 answered after the panic", || {
        h.messenger
            .texts_to(1)
            .contains(&"reply to: still there?".to_owned())
    })
    .await;
    let texts = h.messenger.texts_to(1);
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("Sorry, something went wrong")),
        "{texts:?}"
    );
    assert_eq!(h.metrics.session_panics_total.get(), 1);
    // The session restarted from storage and still knows its history.
    let requests = h.llm.requests.lock().expect("lock");
    let last = requests.last().expect("requests");
    assert!(last.messages.iter().any(|m| m.content == "PANIC"));
    h.router.stop();
}

#[actix_rt::test]
async fn an_idle_session_is_passivated_and_resumes_from_storage() {
    let h = harness_with(
        SessionSettings::default(),
        EchoLlm::default(),
        KindPolicy {
            idle_timeout: Duration::from_secs(15 * 60),
            ..KindPolicy::default()
        },
    );
    h.router.route(pick(7, "mira"));
    h.router.route(text(7, "remember the red door"));
    eventually("reply", || replies(&h, 7).len() == 1).await;
    eventually("idle", || h.router.in_flight() == 0).await;
    h.clock.advance(Duration::from_secs(14 * 60));
    tokio::task::yield_now().await;
    assert_eq!(
        h.metrics.sessions_active.get(),
        1,
        "not idle long enough yet"
    );
    h.clock.advance(Duration::from_secs(60));
    eventually("passivated", || h.metrics.sessions_active.get() == 0).await;
    // Going idle tells the scheduler the user was here (recaps, the reminder of this
    // silence), once per visit.
    let seen = h
        .notifier
        .asked()
        .iter()
        .filter(|asked| **asked == crate::scheduler::testing::Asked::UserSeen(7))
        .count();
    assert_eq!(seen, 1);
    h.router.route(text(7, "what did I say?"));
    eventually("second reply", || replies(&h, 7).len() == 2).await;
    let requests = h.llm.requests.lock().expect("lock");
    let last = requests.last().expect("requests");
    assert!(
        last.messages
            .iter()
            .any(|m| m.content == "remember the red door"),
        "history reloaded from storage"
    );
    assert_eq!(h.store.message_count(), 5);
    h.router.stop();
}

#[actix_rt::test]
async fn a_full_queue_refuses_with_a_notice() {
    // The LLM answers only when the test lets it, so the queue is surely full.
    let (h, gate) = gated(KindPolicy {
        mailbox_capacity: 2,
        ..KindPolicy::default()
    });
    h.router.route(pick(3, "mira"));
    eventually("greeting", || h.messenger.texts_to(3).len() == 1).await;
    for index in 0..6 {
        h.router.route(text(3, &format!("q{index}")));
    }
    let count = |prefix: &str| {
        let texts = h.messenger.texts_to(3);
        texts.iter().filter(|t| t.starts_with(prefix)).count()
    };
    // q0 is being answered, q1 and q2 wait, q3..q5 are refused.
    eventually("three notices", || count("I am still answering") == 3).await;
    gate.add_permits(3);
    eventually("all events finished", || h.router.in_flight() == 0).await;
    assert_eq!(
        replies(&h, 3),
        ["reply to: q0", "reply to: q1", "reply to: q2"]
    );
    assert_eq!(count("I am still answering"), 3);
    h.router.stop();
}

#[actix_rt::test]
async fn stop_skips_the_queue_and_cancels_only_the_reply_being_written() {
    let (h, gate) = gated(KindPolicy::default());
    h.router.route(pick(5, "mira"));
    eventually("opening", || h.messenger.texts_to(5).len() == 1).await;
    h.router.route(command(5, "/stop"));
    eventually("nothing to stop", || {
        h.messenger.texts_to(5).last().map(String::as_str)
            == Some("Nothing is being written right now.")
    })
    .await;
    h.router.route(text(5, "first"));
    h.router.route(text(5, "second"));
    eventually("the placeholder", || {
        h.messenger.texts_to(5).last().map(String::as_str) == Some("… typing")
    })
    .await;
    // "/stop" overtakes "second", which waits in the queue, and cancels "first".
    h.router.route(command(5, "/stop"));
    eventually("the second reply", || {
        h.messenger.texts_to(5).last().map(String::as_str) == Some("… typing")
            && h.messenger.texts_to(5).contains(&"(stopped)".to_owned())
    })
    .await;
    gate.add_permits(1);
    eventually("second answered", || replies(&h, 5) == ["reply to: second"]).await;
    let stored: Vec<(String, &str)> = h.store.messages().into_iter().skip(1).collect();
    assert_eq!(
        stored,
        [
            ("first".to_owned(), "complete"),
            ("second".to_owned(), "complete"),
            ("reply to: second".to_owned(), "complete"),
        ],
        "nothing stored for the stopped reply"
    );
    h.router.stop();
}

#[actix_rt::test]
async fn drop_oldest_makes_room_for_the_newest_message() {
    let (h, gate) = gated(KindPolicy {
        mailbox_capacity: 1,
        overflow: OverflowPolicy::DropOldest,
        ..KindPolicy::default()
    });
    h.router.route(pick(4, "mira"));
    eventually("greeting", || h.messenger.texts_to(4).len() == 1).await;
    for index in 0..3 {
        h.router.route(text(4, &format!("d{index}")));
    }
    // d0 is being answered; d1 waited and was dropped for d2.
    eventually("the drop notice", || {
        h.messenger
            .texts_to(4)
            .iter()
            .any(|t| t.starts_with("Too many messages at once: I skipped"))
    })
    .await;
    gate.add_permits(2);
    eventually("all events finished", || h.router.in_flight() == 0).await;
    assert_eq!(replies(&h, 4), ["reply to: d0", "reply to: d2"]);
    h.router.stop();
}
