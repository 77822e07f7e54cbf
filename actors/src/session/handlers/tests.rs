//! The handlers' tests: what a user sees and what is stored, on the in-memory ports and a
//! manual clock.

use std::sync::Arc;
use std::time::Duration;

use crate::ports::{Clock, Role};
use crate::session::SessionSettings;
use crate::session::buttons::ButtonData;
use crate::supervision::KindPolicy;
use crate::testing::*;

const USER: i64 = 42;

/// The opening a test persona's story sends in `slot`.
fn opening(slot: u8, persona: &str) -> String {
    format!("Dialog {slot}: {persona} — First\n\nHi User{USER}")
}

/// Opens the test personas' stories in slots 1, 2 and 3.
async fn fill_three_slots(h: &SessionHarness) {
    for (slot, (id, name)) in [
        (1, ("mira", "Mira")),
        (2, ("arlo", "Arlo")),
        (3, ("nova", "Nova")),
    ] {
        h.handle(pick(USER, id)).await;
        assert_eq!(h.last_text(USER), opening(slot, name));
    }
}

#[actix_rt::test]
async fn a_fourth_story_asks_which_slot_to_replace_and_replaces_only_that_one() {
    let h = SessionHarness::standard();
    fill_three_slots(&h).await;
    h.handle(text(USER, "hello Arlo")).await;

    h.handle(pick(USER, "kai")).await;
    assert!(
        h.last_text(USER)
            .starts_with("All three dialogs are in use.")
    );
    let buttons = h.last_buttons(USER);
    assert_eq!(buttons.len(), 4, "one per slot and Cancel: {buttons:?}");
    let replace_two = buttons[1].clone();
    assert!(matches!(
        ButtonData::decode(&replace_two),
        ButtonData::ReplaceSlot { slot: 2, .. }
    ));

    h.handle(press(USER, &replace_two)).await;
    assert_eq!(h.last_text(USER), opening(2, "Kai"));
    h.handle(text(USER, "hi Kai")).await;
    let last = last_request(&h);
    assert!(
        last.messages[0].content.contains("Carves boats."),
        "Kai answers"
    );
    assert!(
        !last.messages.iter().any(|m| m.content == "hello Arlo"),
        "Arlo's history is not Kai's"
    );

    // The question was about Arlo's dialog: pressing it again replaces nothing.
    let before = h.store.message_count();
    h.handle(press(USER, &replace_two)).await;
    assert_eq!(h.last_text(USER), "Cancelled.");
    assert_eq!(h.store.message_count(), before);
    h.router.stop();
}

#[actix_rt::test]
async fn clearing_a_slot_starts_its_story_over_and_a_stale_clear_does_nothing() {
    let h = SessionHarness::standard();
    h.handle(pick(USER, "mira")).await;
    h.handle(text(USER, "the key is under the mat")).await;

    h.handle(press(USER, "k:1")).await;
    assert!(h.last_text(USER).starts_with("Clear dialog 1 with Mira?"));
    let confirm = h.last_buttons(USER)[0].clone();
    h.handle(press(USER, &confirm)).await;
    assert_eq!(h.last_text(USER), opening(1, "Mira"));

    h.handle(text(USER, "what key?")).await;
    let last = last_request(&h);
    assert!(
        !last
            .messages
            .iter()
            .any(|m| m.content == "the key is under the mat"),
        "the cleared history is gone from the prompt"
    );
    // Its messages stay stored all the same.
    assert!(
        h.store
            .messages()
            .iter()
            .any(|(text, _)| text == "the key is under the mat")
    );

    // The confirmation named the old dialog: pressed again, it clears nothing.
    let before = h.store.message_count();
    h.handle(press(USER, &confirm)).await;
    assert_eq!(h.last_text(USER), "Cancelled.");
    assert_eq!(h.store.message_count(), before);
    h.router.stop();
}

#[actix_rt::test]
async fn reset_clears_every_slot_but_not_after_a_newer_story() {
    let h = SessionHarness::standard();
    h.handle(pick(USER, "mira")).await;
    h.handle(command(USER, "/reset")).await;
    let stale = h.last_buttons(USER)[0].clone();
    // A story opened after the question: its button must not clear the new dialog.
    h.handle(pick(USER, "arlo")).await;
    h.handle(press(USER, &stale)).await;
    assert_eq!(h.last_text(USER), "Cancelled.");
    h.handle(command(USER, "/dialogs")).await;
    assert!(h.last_text(USER).contains("Arlo"), "{}", h.last_text(USER));

    h.handle(command(USER, "/reset")).await;
    let confirm = h.last_buttons(USER)[0].clone();
    h.handle(press(USER, &confirm)).await;
    assert_eq!(
        h.last_text(USER),
        "All dialogs are cleared. /start to begin a new one."
    );
    h.handle(text(USER, "anyone there?")).await;
    assert!(
        h.last_text(USER).starts_with("First pick a character"),
        "{}",
        h.last_text(USER)
    );
    h.router.stop();
}

#[actix_rt::test]
async fn coming_back_after_hours_gets_a_greeting_that_recalls_the_story() {
    let h = SessionHarness::standard();
    h.handle(pick(USER, "mira")).await;
    h.handle(text(USER, "I hid the map")).await;
    h.handle(pick(USER, "arlo")).await;

    // Five hours are not long enough (the default is six).
    h.clock.advance(Duration::from_secs(5 * 3600));
    h.handle(press(USER, "c:1")).await;
    assert_eq!(
        h.last_text(USER),
        "Dialog 1: Mira — First\n\nreply to: I hid the map",
        "where the story stopped, no LLM call"
    );

    h.clock.advance(Duration::from_secs(7 * 3600));
    h.handle(press(USER, "c:2")).await;
    let request = last_request(&h);
    let last = request.messages.last().expect("messages");
    assert_eq!(last.role, Role::System);
    assert!(
        last.content.contains("comes back to this story"),
        "{last:?}"
    );

    // Writing after hours (without "Continue"): the reply greets first.
    h.clock.advance(Duration::from_secs(7 * 3600));
    h.handle(text(USER, "I am back")).await;
    let request = last_request(&h);
    let last = request.messages.last().expect("messages");
    assert!(
        last.content
            .contains("Begin Arlo's reply with a short greeting"),
        "{last:?}"
    );
    h.router.stop();
}

#[actix_rt::test]
async fn unknown_and_garbage_buttons_are_cancelled_and_change_nothing() {
    let h = SessionHarness::standard();
    h.handle(pick(USER, "mira")).await;
    let before = h.store.message_count();
    for data in [
        "",
        "pick:mira",
        "c:9",
        "k!:1:-1",
        "r:1:zz:mira",
        "💥",
        "t:loud",
    ] {
        h.handle(press(USER, data)).await;
        assert_eq!(h.last_text(USER), "Cancelled.", "{data:?}");
    }
    assert_eq!(h.store.message_count(), before);
    // The session still works.
    h.handle(text(USER, "still here?")).await;
    assert_eq!(h.last_text(USER), "reply to: still here?");
    h.router.stop();
}

#[actix_rt::test]
async fn stopping_with_nothing_queued_is_answered_in_the_users_language() {
    let h = SessionHarness::standard();
    h.handle(press(USER, "l:ru")).await;
    h.handle(command(USER, "/stop")).await;
    eventually("the answer to /stop", || {
        h.last_text(USER) == "Сейчас ничего не пишется."
    })
    .await;
    h.router.stop();
}

/// The newest request the LLM got.
fn last_request(h: &SessionHarness) -> crate::ports::CompletionRequest {
    crate::sync::lock(&h.llm.requests)
        .last()
        .cloned()
        .expect("a request")
}

/// Leaves a reply cut short as a crash would: the user's message stored as pending, its
/// placeholder on screen, the LLM never answering; then restarts on the same storage and
/// chat with an LLM that answers at once.
async fn crash_mid_reply(text_sent: &str) -> SessionHarness {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let h = SessionHarness::new(
        SessionSettings::default(),
        EchoLlm {
            gate: Some(gate),
            ..EchoLlm::default()
        },
        KindPolicy::default(),
    );
    h.handle(pick(USER, "mira")).await;
    h.router.route(text(USER, text_sent));
    eventually("the placeholder shown and the message pending", || {
        h.messenger.texts_to(USER).last().map(String::as_str) == Some("… typing")
            && h.store.messages().last() == Some(&(text_sent.to_owned(), "pending"))
    })
    .await;
    h.crash_and_restart(EchoLlm::default())
}

#[actix_rt::test]
async fn a_reply_cut_short_by_a_crash_is_written_into_its_frozen_placeholder() {
    let h = crash_mid_reply("where is the key?").await;
    h.router.activate(USER);
    eventually("the reply in the placeholder", || {
        h.last_text(USER) == "reply to: where is the key?"
    })
    .await;
    eventually("the recovery finished", || h.router.in_flight() == 0).await;
    assert_eq!(
        h.messenger.texts_to(USER),
        [opening(1, "Mira"), "reply to: where is the key?".to_owned()],
        "one reply, in the placeholder's message"
    );
    let stored = h.store.messages();
    assert_eq!(stored[1], ("where is the key?".to_owned(), "complete"));
    assert_eq!(
        stored[2],
        ("reply to: where is the key?".to_owned(), "complete")
    );
    assert_eq!(
        h.metrics
            .recovered_replies_total
            .with_label_values(&["rewritten"])
            .get(),
        1
    );

    // Telegram hands the same update over again (it was accepted before the crash): the
    // message is stored, so it is not answered a second time.
    let mut again = text(USER, "where is the key?");
    again.update_id = Some(7);
    again.replayed = true;
    let stored_first = crate::domain::event::Inbound {
        replayed: false,
        api: None,
        ..again.clone()
    };
    h.handle(stored_first).await;
    let replies = h.messenger.texts_to(USER).len();
    h.handle(again).await;
    assert_eq!(h.messenger.texts_to(USER).len(), replies, "answered once");
    h.router.stop();
}

#[actix_rt::test]
async fn a_reply_cut_short_too_long_ago_fails_visibly_with_retry() {
    let h = crash_mid_reply("where is the key?").await;
    h.clock.advance(Duration::from_secs(11 * 60));
    h.router.activate(USER);
    eventually("the notice in the placeholder", || {
        h.last_text(USER)
            .starts_with("Sorry, my reply to this was interrupted")
    })
    .await;
    eventually("the recovery finished", || h.router.in_flight() == 0).await;
    assert_eq!(
        h.messenger.texts_to(USER).len(),
        2,
        "in the placeholder's place"
    );
    assert_eq!(h.last_buttons(USER), ["retry"]);
    assert!(
        h.llm.requests.lock().expect("lock").is_empty(),
        "no LLM call"
    );
    assert_eq!(
        h.store.messages().last(),
        Some(&("where is the key?".to_owned(), "unanswered"))
    );
    h.handle(press(USER, "retry")).await;
    assert_eq!(h.last_text(USER), "reply to: where is the key?");
    h.router.stop();
}

#[actix_rt::test]
async fn a_panic_while_replying_leaves_the_apology_in_the_placeholder_not_a_second_try() {
    let h = SessionHarness::standard();
    h.handle(pick(USER, "mira")).await;
    h.handle(text(USER, "PANIC")).await;
    eventually("the apology", || {
        h.last_text(USER).starts_with("Sorry, something went wrong")
    })
    .await;
    eventually("the recovery finished", || h.router.in_flight() == 0).await;
    assert_eq!(
        h.messenger.texts_to(USER).len(),
        2,
        "the apology took the placeholder's place"
    );
    assert_eq!(h.last_buttons(USER), ["retry"]);
    assert_eq!(h.llm.requests.lock().expect("lock").len(), 1, "asked once");
    assert_eq!(
        h.store.messages().last(),
        Some(&("PANIC".to_owned(), "unanswered"))
    );
    h.router.stop();
}

#[actix_rt::test]
async fn a_message_that_waited_too_long_is_failed_visibly_instead_of_answered_late() {
    let h = SessionHarness::standard();
    h.handle(pick(USER, "mira")).await;
    let mut late = text(USER, "are you there?");
    late.accepted_at = Some(h.clock.now_millis() - 11 * 60 * 1000);
    h.handle(late).await;
    assert!(
        h.last_text(USER)
            .starts_with("Sorry, I could not answer this in time")
    );
    assert_eq!(h.last_buttons(USER), ["retry"]);
    assert!(h.llm.requests.lock().expect("lock").is_empty());
    assert_eq!(
        h.store.messages().last(),
        Some(&("are you there?".to_owned(), "unanswered"))
    );
    h.router.stop();
}

#[actix_rt::test]
async fn a_message_over_the_size_limit_is_refused_and_not_sent_to_the_llm() {
    let h = SessionHarness::standard();
    h.handle(pick(USER, "mira")).await;
    let stored = h.store.message_count();
    h.handle(text(USER, &"word ".repeat(500))).await;
    assert_eq!(
        h.last_text(USER),
        "That message is too long for me: please keep it under 2000 characters. Nothing was \
         sent to the character."
    );
    assert!(h.llm.requests.lock().expect("lock").is_empty());
    assert_eq!(h.store.message_count(), stored);
    h.router.stop();
}

#[actix_rt::test]
async fn a_user_who_blocked_the_bot_costs_no_llm_call() {
    let h = SessionHarness::standard();
    h.handle(pick(USER, "mira")).await;
    crate::sync::lock(&h.messenger.blocked).insert(USER);
    h.handle(text(USER, "hello?")).await;
    assert!(
        h.llm.requests.lock().expect("lock").is_empty(),
        "no LLM call"
    );
    assert_eq!(
        h.store.messages().last(),
        Some(&("hello?".to_owned(), "unanswered"))
    );
    h.router.stop();
}

#[actix_rt::test]
async fn a_reply_stored_but_perhaps_not_shown_is_shown_again_as_it_was() {
    let h = SessionHarness::standard();
    h.handle(pick(USER, "mira")).await;
    h.handle(text(USER, "the tide?")).await;
    // As if the process stopped while Telegram got the final text: stored as being shown,
    // the chat still on a draft.
    let reply = h.messenger.messages_to(USER).pop().expect("the reply");
    let stored = h.store.message_count() as i64;
    {
        use crate::ports::{MessageStatus, Messenger, SessionStore};
        h.store
            .set_status(stored, MessageStatus::Delivering)
            .await
            .expect("status");
        h.messenger
            .edit_text(
                USER,
                reply.id,
                "reply to: the",
                None,
                crate::ports::Render::Draft,
            )
            .await
            .expect("a draft");
    }
    let h = h.crash_and_restart(EchoLlm::default());
    h.router.activate(USER);
    eventually("the reply shown again", || {
        h.last_text(USER) == "reply to: the tide?"
    })
    .await;
    eventually("the recovery finished", || h.router.in_flight() == 0).await;
    assert_eq!(
        h.messenger.texts_to(USER).len(),
        2,
        "in its own message, once"
    );
    assert!(
        h.llm.requests.lock().expect("lock").is_empty(),
        "not written anew"
    );
    assert_eq!(
        h.store.messages().last(),
        Some(&("reply to: the tide?".to_owned(), "complete"))
    );
    assert_eq!(h.last_buttons(USER), ["regen"]);
    h.router.stop();
}

#[actix_rt::test]
async fn settings_switch_notification_topics_and_quiet_hours_and_timezone_moves_recaps() {
    use crate::domain::notification::{QuietHours, Topic};
    use crate::ports::schedule::JobStore;
    use crate::scheduler::testing::Asked;

    let h = SessionHarness::standard();
    h.jobs.add_user(USER);
    // Without a dialog, /settings is the notifications' own.
    h.handle(command(USER, "/settings")).await;
    assert!(
        h.last_text(USER)
            .starts_with("🔔 Notifications\nQuiet hours: 23:00–08:00")
    );
    let labels = h.last_labels(USER);
    assert_eq!(labels[0], "Subscription: on");
    assert_eq!(labels[3], "Weekly and monthly recaps: on");
    h.handle(press(
        USER,
        &ButtonData::NotifyTopic(Topic::Recaps).encode(),
    ))
    .await;
    assert_eq!(h.last_labels(USER)[3], "Weekly and monthly recaps: off");
    let quiet = ButtonData::QuietHours { start: 22, end: 7 }.encode();
    assert!(labels.contains(&"Quiet hours: 23:00–08:00".to_owned()));
    h.handle(press(USER, &quiet)).await;
    let stored = h.jobs.audience(USER).await.expect("read").expect("a user");
    assert!(stored.settings.disabled.contains(&Topic::Recaps));
    assert_eq!(
        stored.settings.quiet,
        Some(QuietHours { start: 22, end: 7 })
    );
    // A zone Telegram users type: stored by its canonical name, and the recaps move.
    h.handle(command(USER, "/timezone Europe/Moscow")).await;
    assert_eq!(h.last_text(USER), "Time zone set: Europe/Moscow.");
    let stored = h.jobs.audience(USER).await.expect("read").expect("a user");
    assert_eq!(stored.settings.time_zone.as_deref(), Some("Europe/Moscow"));
    assert!(h.notifier.asked().contains(&Asked::ZoneChanged(USER)));
    h.handle(command(USER, "/timezone Mars/Olympus")).await;
    assert!(
        h.last_text(USER)
            .starts_with("Send your time zone like this")
    );
}

#[actix_rt::test]
async fn report_asks_the_scheduler_and_a_milestone_is_scheduled_once() {
    use crate::domain::notification::NotificationKind;
    use crate::scheduler::testing::Asked;

    let h = SessionHarness::standard();
    h.handle(command(USER, "/report")).await;
    assert_eq!(h.last_text(USER), "Writing your report…");
    assert!(
        h.notifier
            .asked()
            .iter()
            .any(|asked| matches!(asked, Asked::Report(USER, USER, _)))
    );
    // The harness celebrates the second persona message: the opening, then one reply.
    h.handle(pick(USER, "mira")).await;
    h.handle(text(USER, "hello")).await;
    h.handle(text(USER, "again")).await;
    let milestones: Vec<_> = h
        .notifier
        .asked()
        .into_iter()
        .filter_map(|asked| match asked {
            Asked::Notify(job) if job.kind == NotificationKind::Milestone => Some(job),
            _ => None,
        })
        .collect();
    assert_eq!(milestones.len(), 1, "{milestones:?}");
    assert!(milestones[0].key.ends_with(":2"), "{}", milestones[0].key);
}
