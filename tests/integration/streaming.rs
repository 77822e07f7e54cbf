//! Replies appear as they are written: a placeholder, throttled draft edits, the final text;
//! broken streams, /stop, the queue while a reply is written, "Regenerate" and "Continue".

use std::time::Duration;

use serde_json::Value;

use crate::on_both_backends;
use crate::support::*;

on_both_backends!(
    a_reply_streams_into_a_placeholder_with_throttled_edits,
    a_broken_stream_keeps_what_came_with_a_note_and_is_stored_as_partial,
    stop_cancels_the_reply_being_written,
    regenerate_replaces_the_last_reply_and_keeps_the_old_one_stored,
    every_nth_persona_message_offers_continue,
    regenerating_a_long_reply_rewrites_all_of_its_messages,
    telegram_flood_control_on_an_edit_is_waited_out,
    flood_control_on_a_draft_pauses_drafts_without_holding_the_reply,
    a_reply_whose_placeholder_cannot_be_edited_arrives_as_a_new_message,
    a_long_streamed_reply_is_split_over_several_messages,
    a_reply_streaming_longer_than_the_request_timeout_arrives_whole,
    messages_while_a_reply_is_written_queue_in_order_and_overflow_is_told,
);

/// The message whose text is `text` in the chat (as it reads now).
fn message_with_text(app: &TestApp, chat: i64, text: &str) -> Value {
    app.telegram
        .sent_messages(chat)
        .into_iter()
        .find(|message| message["text"] == text)
        .unwrap_or_else(|| panic!("no message reads {text:?}"))
}

async fn a_reply_streams_into_a_placeholder_with_throttled_edits(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.start_dialog(20001, "mira").await;
    // Ten pieces of 30 characters, one every 250 ms: 2.5 s of writing.
    let parts = pieces(10, 30);
    let whole: String = parts.concat();
    app.llm.script([LlmBehaviour::Stream {
        pieces: parts,
        delay: Duration::from_millis(250),
    }]);
    app.user_says(20001, "tell me about the lamp").await;
    let texts = app.wait_for_last_text(20001, whole.trim()).await;
    assert_eq!(texts.len(), 2, "the opening and one reply: {texts:?}");

    // It began as a placeholder.
    let sends = app.telegram.calls_to("sendMessage");
    assert_eq!(sends.last().expect("sends").body["text"], "… typing");
    let request = app.llm.requests().pop().expect("a request");
    assert_eq!(request["stream"], true, "the LLM is asked to stream");

    let edits = app.telegram.edits(20001);
    let (last, drafts) = edits.split_last().expect("edits");
    assert!(drafts.len() >= 2, "drafts while it was written: {edits:?}");
    for pair in edits.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_millis(950),
            "at most one edit per second: {gap:?} between edits"
        );
    }
    let mut previous = 0;
    for draft in drafts {
        assert!(!draft.markdown, "drafts are plain text");
        assert!(
            whole.starts_with(&draft.text),
            "a draft is the beginning: {}",
            draft.text
        );
        let length = draft.text.chars().count();
        assert!(length >= previous + 20, "only when enough new text came");
        previous = length;
    }
    assert_eq!(
        last.text,
        whole.trim(),
        "the final edit carries the whole reply"
    );
    assert!(last.markdown, "the final text is sent with Markdown");
    let reply = message_with_text(&app, 20001, whole.trim());
    assert_eq!(
        button_data(&reply),
        ["regen"],
        "the last reply can be regenerated"
    );
    app.stop().await;
}

async fn telegram_flood_control_on_an_edit_is_waited_out(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.start_dialog(20101, "arlo").await;
    app.telegram.throttle_edits(1, 1);
    let started = std::time::Instant::now();
    app.user_says(20101, "who sent the letter?").await;
    app.wait_for_last_text(20101, "echo: who sent the letter?")
        .await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the retry waited for retry_after"
    );
    let attempts = app.telegram.calls_to("editMessageText").len();
    assert_eq!(attempts, 2, "the throttled edit was sent again once");
    app.stop().await;
}

async fn flood_control_on_a_draft_pauses_drafts_without_holding_the_reply(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.start_dialog(20151, "kai").await;
    let parts = pieces(8, 30);
    let whole: String = parts.concat();
    app.llm.script([LlmBehaviour::Stream {
        pieces: parts,
        delay: Duration::from_millis(300),
    }]);
    // The first draft is refused with retry_after = 2 s.
    app.telegram.throttle_edits(1, 2);
    app.user_says(20151, "what's cooking?").await;
    let throttled_at = wait_until("the first draft refused", || {
        let calls = app.telegram.calls_to("editMessageText");
        (!calls.is_empty()).then(std::time::Instant::now)
    })
    .await;
    app.wait_for_last_text(20151, whole.trim()).await;
    let edits = app.telegram.edits(20151);
    let first = edits.first().expect("an accepted edit");
    assert!(
        first.at.duration_since(throttled_at) >= Duration::from_millis(1800),
        "no edit while Telegram asked to wait: {:?}",
        first.at.duration_since(throttled_at)
    );
    assert_eq!(
        app.telegram.calls_to("editMessageText").len(),
        edits.len() + 1,
        "the refused draft was not sent again"
    );
    assert_eq!(
        edits.last().map(|edit| edit.text.as_str()),
        Some(whole.trim())
    );
    app.stop().await;
}

async fn a_reply_whose_placeholder_cannot_be_edited_arrives_as_a_new_message(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.start_dialog(20161, "pavel").await;
    app.telegram.refuse_edits(1);
    app.user_says(20161, "is the kettle on?").await;
    let texts = app
        .wait_for_last_text(20161, "echo: is the kettle on?")
        .await;
    assert_eq!(texts.len(), 2);
    let reply = app.telegram.sent_messages(20161).pop().expect("the reply");
    assert_eq!(button_data(&reply), ["regen"]);
    // The placeholder it replaces is removed, not left saying "… typing".
    wait_until("the placeholder removed", || {
        (app.telegram.calls_to("deleteMessage").len() == 1).then_some(())
    })
    .await;
    let placeholder = app
        .telegram
        .calls_to("sendMessage")
        .into_iter()
        .find(|call| call.body["text"] == "… typing")
        .expect("a placeholder was sent");
    let deleted = &app.telegram.calls_to("deleteMessage")[0];
    assert_eq!(deleted.body["chat_id"], placeholder.body["chat_id"]);
    app.stored_when(20161, "the reply stored", |stored| {
        stored
            .last()
            .is_some_and(|m| m.1 == "echo: is the kettle on?" && m.2 == "complete")
    })
    .await;
    app.stop().await;
}

async fn a_long_streamed_reply_is_split_over_several_messages(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.start_dialog(20201, "nova").await;
    let parts: Vec<String> = (0..9).map(|_| "word ".repeat(200)).collect();
    let whole = parts.concat();
    app.llm.script([LlmBehaviour::Stream {
        pieces: parts,
        delay: Duration::from_millis(150),
    }]);
    app.user_says(20201, "tell me everything").await;
    let texts = wait_until("the whole reply over three messages", || {
        let texts = app.telegram.sent_texts(20201);
        (texts.len() == 4 && texts[1..].join(" ") == whole.trim()).then_some(texts)
    })
    .await;
    assert!(texts.iter().all(|text| text.encode_utf16().count() <= 4096));
    let messages = app.telegram.sent_messages(20201);
    assert!(button_data(&messages[1]).is_empty() && button_data(&messages[2]).is_empty());
    assert_eq!(
        button_data(&messages[3]),
        ["regen"],
        "buttons on the last part"
    );
    app.stored_when(20201, "the whole reply stored", |stored| {
        stored.last().is_some_and(|m| m.1 == whole.trim())
    })
    .await;
    app.stop().await;
}

async fn a_reply_streaming_longer_than_the_request_timeout_arrives_whole(backend: Backend) {
    let app = TestApp::spawn_adjusted(backend, |settings| {
        settings.llm.request_timeout = Duration::from_secs(1);
    })
    .await;
    app.start_dialog(20251, "pavel").await;
    // 2.4 s of writing in all, never silent for longer than 300 ms.
    let parts = pieces(8, 30);
    let whole: String = parts.concat();
    app.llm.script([LlmBehaviour::Stream {
        pieces: parts,
        delay: Duration::from_millis(300),
    }]);
    app.user_says(20251, "tell me the whole recipe").await;
    app.wait_for_last_text(20251, whole.trim()).await;
    app.stored_when(20251, "the whole reply stored as complete", |stored| {
        stored
            .last()
            .is_some_and(|m| m.1 == whole.trim() && m.2 == "complete")
    })
    .await;
    app.stop().await;
}

async fn a_broken_stream_keeps_what_came_with_a_note_and_is_stored_as_partial(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.start_dialog(20301, "mira").await;
    let parts = pieces(3, 25);
    let came = parts.concat();
    app.llm.script([LlmBehaviour::StreamThenBreak {
        pieces: parts,
        delay: Duration::from_millis(100),
    }]);
    app.user_says(20301, "and then?").await;
    let expected = format!(
        "{}\n\n(the reply was cut off — press Regenerate or write on)",
        came.trim()
    );
    app.wait_for_last_text(20301, &expected).await;
    assert_eq!(
        app.llm.requests().len(),
        1,
        "text had reached the user: no second attempt"
    );
    let stored = app
        .stored_when(20301, "the partial reply stored", |stored| {
            // Stored `delivering` before its final edit, `partial` once that is shown.
            stored.len() == 3 && stored.last().is_some_and(|last| last.2 != "delivering")
        })
        .await;
    let last = stored.last().expect("stored");
    assert_eq!(
        (last.0.as_str(), last.1.as_str(), last.2.as_str()),
        ("assistant", came.trim(), "partial")
    );
    // The partial reply is part of the story: the next request carries it.
    app.user_says(20301, "go on").await;
    app.wait_for_last_text(20301, "echo: go on").await;
    let request = app.llm.requests().pop().expect("a request");
    assert!(
        request_texts(&request)
            .iter()
            .any(|(role, text)| role == "assistant" && text == came.trim())
    );
    app.stop().await;
}

async fn stop_cancels_the_reply_being_written(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.start_dialog(20401, "kai").await;
    app.user_says(20401, "/stop").await;
    app.wait_for_last_text(20401, "Nothing is being written right now.")
        .await;

    app.llm.script([LlmBehaviour::Stream {
        pieces: pieces(20, 30),
        delay: Duration::from_millis(300),
    }]);
    app.user_says(20401, "cook me something").await;
    // Once the first draft is visible, the user stops it.
    wait_until("a draft", || {
        app.telegram
            .sent_texts(20401)
            .last()
            .is_some_and(|text| text.starts_with("p01-"))
            .then_some(())
    })
    .await;
    let stop = text_update(app.next_update_id(), 20401, "User20401", "en", "/stop");
    assert_eq!(app.post_update(&stop).await, reqwest::StatusCode::OK);
    let texts = wait_until("the stopped reply", || {
        let texts = app.telegram.sent_texts(20401);
        texts
            .last()
            .is_some_and(|text| text.ends_with("\n\n(stopped)"))
            .then_some(texts)
    })
    .await;
    let shown = texts.last().cloned().unwrap_or_default();
    let kept = shown.trim_end_matches("\n\n(stopped)");
    assert!(
        kept.starts_with("p01-") && !kept.contains("p20-"),
        "{shown}"
    );
    let stored = app
        .stored_when(20401, "the stopped reply stored", |stored| {
            // Stored `delivering` before its final edit, `partial` once that is shown.
            stored.len() == 3 && stored.last().is_some_and(|last| last.2 != "delivering")
        })
        .await;
    let last = stored.last().expect("stored");
    assert_eq!((last.0.as_str(), last.2.as_str()), ("assistant", "partial"));
    assert!(kept.starts_with(last.1.as_str()) || last.1.starts_with(kept));
    assert_eq!(
        app.metric("vitte_replies_total{outcome=\"stopped\"}").await,
        1.0
    );
    // The next message is answered normally.
    // Telegram redelivering that /stop while the next reply is written stops nothing.
    let parts = pieces(6, 30);
    let whole: String = parts.concat();
    app.llm.script([LlmBehaviour::Stream {
        pieces: parts,
        delay: Duration::from_millis(250),
    }]);
    app.user_says(20401, "fine, something quick").await;
    wait_until("the next draft", || {
        app.telegram
            .sent_texts(20401)
            .last()
            .is_some_and(|text| text.starts_with("p01-") && !text.contains("(stopped)"))
            .then_some(())
    })
    .await;
    assert_eq!(app.post_update(&stop).await, reqwest::StatusCode::OK);
    app.wait_for_last_text(20401, whole.trim()).await;
    app.stop().await;
}

async fn messages_while_a_reply_is_written_queue_in_order_and_overflow_is_told(backend: Backend) {
    let app = TestApp::spawn_adjusted(
        backend,
        // The first reply is held as long as the test needs.
        |settings| {
            settings.llm.request_timeout = Duration::from_secs(60);
        },
    )
    .await;
    app.start_dialog(20501, "zephyr").await;
    // One is being answered, five wait (the default capacity), the seventh is refused.
    app.llm.hold();
    for index in 1..=7 {
        app.user_says(20501, &format!("riddle {index}")).await;
    }
    let notice = "I am still answering your earlier messages";
    wait_until("the seventh refused", || {
        let texts = app.telegram.sent_texts(20501);
        texts.iter().any(|t| t.starts_with(notice)).then_some(())
    })
    .await;
    app.llm.release();
    let texts = wait_until("six replies", || {
        let texts = app.telegram.sent_texts(20501);
        let replies = texts.iter().filter(|t| t.starts_with("echo: ")).count();
        (replies == 6).then_some(texts)
    })
    .await;
    let replies: Vec<&String> = texts.iter().filter(|t| t.starts_with("echo: ")).collect();
    let expected: Vec<String> = (1..=6).map(|i| format!("echo: riddle {i}")).collect();
    assert_eq!(replies, expected.iter().collect::<Vec<_>>(), "in order");
    let stored = app.dialog_messages(20501).await;
    assert!(
        !stored.iter().any(|(_, text, _)| text == "riddle 7"),
        "the refused one was not half-handled"
    );
    app.stop().await;
}

async fn regenerate_replaces_the_last_reply_and_keeps_the_old_one_stored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.start_dialog(20601, "elena").await;
    app.llm
        .script([LlmBehaviour::Reply("The first version.".into())]);
    app.user_says(20601, "tell me about the canal").await;
    app.wait_for_last_text(20601, "The first version.").await;
    let first = message_with_text(&app, 20601, "The first version.");
    let message_id = first["message_id"].as_i64().expect("an id");

    app.llm
        .script([LlmBehaviour::Reply("The second version.".into())]);
    app.user_presses_on(20601, "regen", message_id).await;
    let texts = app.wait_for_last_text(20601, "The second version.").await;
    assert_eq!(texts.len(), 2, "replaced in place, not added: {texts:?}");
    let second = message_with_text(&app, 20601, "The second version.");
    assert_eq!(
        second["message_id"], message_id,
        "the same Telegram message"
    );
    let request = app.llm.requests().pop().expect("a request");
    assert!(
        !request_texts(&request)
            .iter()
            .any(|(_, text)| text == "The first version."),
        "the replaced reply is not in the prompt"
    );
    let stored = app
        .stored_when(20601, "the old reply marked replaced", |stored| {
            stored.iter().any(|m| m.2 == "replaced") && stored.len() == 4
        })
        .await;
    let statuses: Vec<(&str, &str)> = stored
        .iter()
        .skip(1)
        .map(|(_, text, status)| (text.as_str(), status.as_str()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("tell me about the canal", "complete"),
            ("The first version.", "replaced"),
            ("The second version.", "complete"),
        ]
    );

    // A later reply: the earlier one's button no longer regenerates.
    app.user_says(20601, "and the bridges?").await;
    app.wait_for_last_text(20601, "echo: and the bridges?")
        .await;
    app.user_presses_on(20601, "regen", message_id).await;
    app.wait_for_last_text(20601, "Only the latest reply can be regenerated.")
        .await;
    // After a restart the replaced reply stays out of the dialog.
    let app = app.restart().await;
    app.user_says(20601, "one more").await;
    app.wait_for_last_text(20601, "echo: one more").await;
    let request = app.llm.requests().pop().expect("a request");
    let history = request_texts(&request);
    assert!(!history.iter().any(|(_, text)| text == "The first version."));
    assert!(
        history
            .iter()
            .any(|(_, text)| text == "The second version.")
    );
    app.stop().await;
}

async fn regenerating_a_long_reply_rewrites_all_of_its_messages(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.start_dialog(20651, "zephyr").await;
    let long = "The dragon recites. ".repeat(500);
    app.llm.script([LlmBehaviour::Reply(long.clone())]);
    app.user_says(20651, "tell me the longest tale").await;
    let texts = wait_until("the tale over three messages", || {
        let texts = app.telegram.sent_texts(20651);
        (texts.len() == 4).then_some(texts)
    })
    .await;
    assert_eq!(texts[1..].join(" "), long.trim());
    let last = app
        .telegram
        .sent_messages(20651)
        .pop()
        .expect("the last part");
    let last_id = last["message_id"].as_i64().expect("an id");
    assert_eq!(button_data(&last), ["regen"]);
    app.stored_when(20651, "the tale stored", |stored| stored.len() == 3)
        .await;

    // After a restart (the parts' ids come from storage) the short version replaces all.
    let app = app.restart().await;
    app.llm
        .script([LlmBehaviour::Reply("A short tale.".into())]);
    app.user_presses_on(20651, "regen", last_id).await;
    let texts = wait_until("one message with the short tale", || {
        let texts = app.telegram.sent_texts(20651);
        (texts.len() == 2 && texts[1] == "A short tale.").then_some(texts)
    })
    .await;
    assert!(texts[0].starts_with("Dialog 1: Zephyr"));
    assert_eq!(
        app.telegram.calls_to("deleteMessage").len(),
        2,
        "the other two parts"
    );
    app.stop().await;
}

async fn every_nth_persona_message_offers_continue(backend: Backend) {
    let app =
        TestApp::spawn_adjusted(backend, |settings| settings.session.continue_every = 3).await;
    // The opening is persona message 1; the replies are 2 and 3.
    app.start_dialog(20701, "iris").await;
    app.user_says(20701, "hello").await;
    app.wait_for_last_text(20701, "echo: hello").await;
    let second = message_with_text(&app, 20701, "echo: hello");
    assert_eq!(button_data(&second), ["regen"]);
    app.user_says(20701, "what grows here?").await;
    app.wait_for_last_text(20701, "echo: what grows here?")
        .await;
    let third = message_with_text(&app, 20701, "echo: what grows here?");
    assert_eq!(
        button_data(&third),
        ["regen", "more"],
        "the third one may go on"
    );

    app.llm.script([LlmBehaviour::Reply(
        "*She waters the fern.* And then…".into(),
    )]);
    app.user_presses(20701, "more").await;
    app.wait_for_last_text(20701, "*She waters the fern.* And then…")
        .await;
    let request = app.llm.requests().pop().expect("a request");
    let messages = request_texts(&request);
    let (role, directive) = messages.last().expect("messages");
    assert_eq!(role, "system");
    assert!(
        directive.contains("continue the story as Iris"),
        "{directive}"
    );
    assert_eq!(
        messages[messages.len() - 3].1,
        "echo: what grows here?",
        "no new user message"
    );
    app.stored_when(20701, "the continuation stored", |stored| {
        stored
            .last()
            .is_some_and(|m| m.1 == "*She waters the fern.* And then…")
    })
    .await;
    app.stop().await;
}
