//! The handlers' tests: what a user sees and what is stored, on the in-memory ports and a
//! manual clock.

use std::time::Duration;

use crate::ports::Role;
use crate::session::buttons::ButtonData;
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
