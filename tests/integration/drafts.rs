//! Replies streamed as Telegram message drafts (Bot API 9.5 / 10.3), the production default:
//! "Thinking…" at once, the text as it arrives under one draft id, the finished reply as a
//! message of its own; the draft's stop button; the fall back to edits on a server without
//! drafts; flood control; and what must keep working (withheld replies, long replies,
//! Markdown Telegram rejects, "Regenerate", the queue).

use std::time::Duration;

use crate::on_both_backends;
use crate::support::*;

on_both_backends!(
    a_private_reply_streams_as_one_draft_then_arrives_as_one_message,
    the_stop_button_cancels_the_llm_stream_and_keeps_what_was_written,
);

/// The app as it runs in production: message drafts where Telegram has them.
async fn spawn_with_drafts(backend: Backend) -> TestApp {
    spawn_adjusted_with_drafts(backend, |_| {}).await
}

async fn spawn_adjusted_with_drafts(
    backend: Backend,
    adjust: impl FnOnce(&mut vitte::config::Settings) + 'static,
) -> TestApp {
    let options = TestOptions {
        streaming: StreamingMode::Auto,
        adjust: Some(Box::new(adjust)),
        ..TestOptions::default()
    };
    TestApp::spawn_with(backend, options).await
}

async fn a_private_reply_streams_as_one_draft_then_arrives_as_one_message(backend: Backend) {
    let app = spawn_with_drafts(backend).await;
    app.start_dialog(23001, "mira").await;
    // Ten pieces of 30 characters, one every 250 ms: 2.5 s of writing.
    let parts = pieces(10, 30);
    let whole: String = parts.concat();
    app.llm.script([LlmBehaviour::Stream {
        pieces: parts,
        delay: Duration::from_millis(250),
    }]);
    app.user_says(23001, "tell me about the lamp").await;
    let texts = app.wait_for_last_text(23001, whole.trim()).await;
    assert_eq!(texts.len(), 2, "the opening and one reply: {texts:?}");

    let drafts = app.telegram.drafts(23001);
    let (first, later) = drafts.split_first().expect("drafts");
    assert_eq!(first.text, "", "it opens as an empty draft (\"Thinking…\")");
    assert!(later.len() >= 2, "the draft followed the text: {drafts:?}");
    for draft in &drafts {
        assert_eq!(
            draft.draft_id, first.draft_id,
            "one draft id: changes animate"
        );
        assert!(draft.can_stop, "every draft carries the stop button");
        assert!(!draft.keep_on_stop, "vitte itself keeps what was written");
    }
    assert_ne!(first.draft_id, 0);
    let mut previous = 0;
    for draft in later {
        assert!(
            whole.starts_with(&draft.text),
            "a draft is the beginning: {}",
            draft.text
        );
        let length = draft.text.chars().count();
        assert!(length >= previous + 20, "only when enough new text came");
        previous = length;
    }
    for pair in drafts.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_millis(450),
            "at most one draft per draft_interval (500 ms): {gap:?}"
        );
    }
    // No placeholder, no edits: the finished reply is one new message, with Markdown and
    // its buttons, and it replaced the draft.
    assert!(
        app.telegram
            .calls_to("sendMessage")
            .iter()
            .all(|call| call.body["text"] != "… typing"),
        "no placeholder message"
    );
    assert!(app.telegram.edits(23001).is_empty(), "no edits");
    let reply = app.telegram.sent_messages(23001).pop().expect("the reply");
    assert_eq!(reply["parse_mode"], "Markdown");
    assert_eq!(button_data(&reply), ["regen"]);
    assert!(
        app.telegram.visible_draft(23001).is_none(),
        "the user never sees the reply twice"
    );
    let stored = app
        .stored_when(23001, "the reply stored as shown", |stored| {
            stored.len() == 3 && stored[2].2 == "complete"
        })
        .await;
    assert_eq!(stored[2].1, whole.trim());
    app.stop().await;
}

async fn the_stop_button_cancels_the_llm_stream_and_keeps_what_was_written(backend: Backend) {
    let app = spawn_with_drafts(backend).await;
    app.start_dialog(23101, "kai").await;
    app.llm.script([LlmBehaviour::Stream {
        pieces: pieces(20, 30),
        delay: Duration::from_millis(300),
    }]);
    app.user_says(23101, "cook me something").await;
    let draft = wait_until("a draft with text", || {
        app.telegram
            .visible_draft(23101)
            .filter(|draft| draft.text.starts_with("p01-"))
    })
    .await;
    let stop = stopped_generation_update(app.next_update_id(), 23101, draft.draft_id);
    assert_eq!(app.post_update(&stop).await, reqwest::StatusCode::OK);
    let texts = wait_until("the stopped reply", || {
        let texts = app.telegram.sent_texts(23101);
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
    // The LLM's stream was dropped at once: no more tokens paid for.
    let abandoned = wait_until("the LLM stream closed", || {
        let abandoned = app.llm.abandoned_streams();
        (!abandoned.is_empty()).then_some(abandoned)
    })
    .await;
    assert_eq!(abandoned.len(), 1);
    assert!(abandoned[0] < 20, "closed midway: {abandoned:?}");
    let stored = app
        .stored_when(23101, "the stopped reply stored", |stored| {
            stored.len() == 3 && stored.last().is_some_and(|last| last.2 != "delivering")
        })
        .await;
    let last = stored.last().expect("stored");
    assert_eq!((last.0.as_str(), last.2.as_str()), ("assistant", "partial"));
    assert_eq!(
        app.metric("vitte_replies_total{outcome=\"stopped\"}").await,
        1.0
    );
    assert!(app.telegram.visible_draft(23101).is_none());

    // The same stop again (a late press, or Telegram redelivering it) and a stop for a draft
    // nobody knows, while the next reply is written: both ignored.
    let parts = pieces(6, 30);
    let whole: String = parts.concat();
    app.llm.script([LlmBehaviour::Stream {
        pieces: parts,
        delay: Duration::from_millis(250),
    }]);
    app.user_says(23101, "fine, something quick").await;
    wait_until("the next draft", || {
        app.telegram
            .visible_draft(23101)
            .filter(|next| next.draft_id != draft.draft_id && next.text.starts_with("p01-"))
    })
    .await;
    let again = stopped_generation_update(app.next_update_id(), 23101, draft.draft_id);
    assert_eq!(app.post_update(&again).await, reqwest::StatusCode::OK);
    let unknown = stopped_generation_update(app.next_update_id(), 23101, 4242);
    assert_eq!(app.post_update(&unknown).await, reqwest::StatusCode::OK);
    app.wait_for_last_text(23101, whole.trim()).await;
    assert_eq!(app.llm.abandoned_streams().len(), 1, "nothing else stopped");
    app.stop().await;
}

#[actix_rt::test]
async fn a_stop_press_arrives_by_long_polling_too() {
    let options = TestOptions {
        mode: vitte::config::TelegramMode::Polling,
        streaming: StreamingMode::Auto,
        ..TestOptions::default()
    };
    let app = TestApp::spawn_with(Backend::Sqlite, options).await;
    let start = format!("s:mira:{}", first_story("mira"));
    app.telegram
        .push_update(callback_update(1, 23201, "Polly", "en", &start));
    app.wait_for_texts(23201, 1).await;
    let polls = app.telegram.calls_to("getUpdates");
    let allowed = &polls.last().expect("a poll").body["allowed_updates"];
    assert!(
        allowed.as_array().is_some_and(|kinds| kinds
            .iter()
            .any(|kind| kind == "stopped_message_generation")),
        "Telegram is asked for stop presses: {allowed}"
    );
    app.llm.script([LlmBehaviour::Stream {
        pieces: pieces(20, 30),
        delay: Duration::from_millis(300),
    }]);
    app.telegram
        .push_update(text_update(2, 23201, "Polly", "en", "a long one, please"));
    let draft = wait_until("a draft with text", || {
        app.telegram
            .visible_draft(23201)
            .filter(|draft| !draft.text.is_empty())
    })
    .await;
    app.telegram
        .push_update(stopped_generation_update(3, 23201, draft.draft_id));
    let texts = wait_until("the stopped reply", || {
        let texts = app.telegram.sent_texts(23201);
        texts
            .last()
            .is_some_and(|text| text.ends_with("\n\n(stopped)"))
            .then_some(texts)
    })
    .await;
    assert!(texts.last().is_some_and(|text| !text.contains("p20-")));
    app.stop().await;
}

#[actix_rt::test]
async fn a_slow_model_keeps_its_draft_on_screen() {
    // Telegram shows a draft for 30 seconds; vitte sends it again after draft_refresh (1 s
    // here, 20 s by default) without a change.
    let app = spawn_adjusted_with_drafts(Backend::Sqlite, |settings| {
        settings.streaming.draft_refresh = Duration::from_secs(1);
        settings.llm.request_timeout = Duration::from_secs(10);
    })
    .await;
    app.start_dialog(23301, "arlo").await;
    app.llm.set_latency(Duration::from_millis(3500));
    app.user_says(23301, "take your time").await;
    app.wait_for_last_text(23301, "echo: take your time").await;
    let thinking: Vec<_> = app
        .telegram
        .drafts(23301)
        .into_iter()
        .filter(|draft| draft.text.is_empty())
        .collect();
    assert!(
        thinking.len() >= 3,
        "\"Thinking…\" shown again while the model was silent: {thinking:?}"
    );
    for pair in thinking.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(gap >= Duration::from_millis(900), "not more often: {gap:?}");
    }
    app.stop().await;
}

#[actix_rt::test]
async fn a_server_without_drafts_gets_edits_for_the_rest_of_the_process() {
    let app = spawn_with_drafts(Backend::Sqlite).await;
    app.telegram.forget_drafts();
    app.start_dialog(23401, "mira").await;
    let parts = pieces(8, 30);
    let whole: String = parts.concat();
    app.llm.script([LlmBehaviour::Stream {
        pieces: parts,
        delay: Duration::from_millis(250),
    }]);
    app.user_says(23401, "tell me a story").await;
    app.wait_for_last_text(23401, whole.trim()).await;
    assert_eq!(
        app.telegram.calls_to("sendMessageDraft").len(),
        1,
        "one draft was tried"
    );
    let edits = app.telegram.edits(23401);
    assert!(edits.len() >= 2, "streamed by edits instead: {edits:?}");
    assert!(
        app.telegram
            .calls_to("sendMessage")
            .iter()
            .any(|call| call.body["text"] == "… typing"),
        "into a placeholder"
    );
    // The next reply (and every other user's) goes straight to edits.
    app.user_says(23401, "and another").await;
    app.wait_for_last_text(23401, "echo: and another").await;
    app.start_dialog(23402, "kai").await;
    app.user_says(23402, "hello").await;
    app.wait_for_last_text(23402, "echo: hello").await;
    assert_eq!(app.telegram.calls_to("sendMessageDraft").len(), 1);
    app.stop().await;
}

#[actix_rt::test]
async fn flood_control_on_a_draft_pauses_the_drafts_and_the_reply_arrives_whole() {
    let app = spawn_with_drafts(Backend::Sqlite).await;
    app.start_dialog(23501, "kai").await;
    let parts = pieces(8, 30);
    let whole: String = parts.concat();
    app.llm.script([LlmBehaviour::Stream {
        pieces: parts,
        delay: Duration::from_millis(300),
    }]);
    // The first draft ("Thinking…") is refused with retry_after = 2 s.
    app.telegram.throttle_drafts(1, 2);
    app.user_says(23501, "what's cooking?").await;
    let throttled_at = wait_until("the first draft refused", || {
        let calls = app.telegram.calls_to("sendMessageDraft");
        (!calls.is_empty()).then(std::time::Instant::now)
    })
    .await;
    app.wait_for_last_text(23501, whole.trim()).await;
    let drafts = app.telegram.drafts(23501);
    let first = drafts.first().expect("drafts once the pause was over");
    assert!(
        first.at.duration_since(throttled_at) >= Duration::from_millis(1800),
        "no draft while Telegram asked to wait: {:?}",
        first.at.duration_since(throttled_at)
    );
    assert_eq!(
        app.telegram.calls_to("sendMessageDraft").len(),
        drafts.len() + 1,
        "the refused draft was not sent again"
    );
    assert!(app.telegram.visible_draft(23501).is_none());
    app.stop().await;
}

#[actix_rt::test]
async fn a_withheld_reply_never_reaches_a_message_or_a_draft() {
    let app = spawn_with_drafts(Backend::Sqlite).await;
    let user = 23601;
    app.start_dialog(user, "mira").await;
    app.llm.script([LlmBehaviour::Stream {
        pieces: vec![
            "The file ".into(),
            "shows ".into(),
            "nude photos ".into(),
            "of a minor.".into(),
        ],
        delay: Duration::from_millis(700),
    }]);
    app.user_says(user, "what is in the file?").await;
    app.wait_for_last_text(
        user,
        "(I cannot show that reply. Please write something else, or press Regenerate.)",
    )
    .await;
    assert!(
        !app.telegram
            .drafts(user)
            .iter()
            .any(|draft| draft.text.contains("minor")),
        "the rejected text was never drafted"
    );
    assert!(
        !app.telegram
            .sent_texts(user)
            .iter()
            .any(|text| text.contains("minor"))
    );
    assert!(
        app.telegram.visible_draft(user).is_none(),
        "the notice replaced the draft"
    );
    app.stored_when(user, "the withheld reply stored", |stored| {
        stored.iter().any(|message| message.2 == "withheld")
    })
    .await;
    app.stop().await;
}

#[actix_rt::test]
async fn a_long_reply_in_rejected_markdown_arrives_whole_after_its_drafts() {
    let app = spawn_with_drafts(Backend::Sqlite).await;
    app.telegram.set_reject_bad_markdown(true);
    app.start_dialog(23701, "arlo").await;
    // 10 000 characters with an odd '*': Telegram rejects it as Markdown.
    let mut parts = pieces(100, 100);
    parts[0] = format!("*{}", &parts[0][1..]);
    let whole: String = parts.concat();
    app.llm.script([LlmBehaviour::Stream {
        pieces: parts,
        delay: Duration::from_millis(20),
    }]);
    app.user_says(23701, "tell me everything").await;
    let texts = wait_until("the whole reply", || {
        let texts = app.telegram.sent_texts(23701);
        (texts.len() >= 4).then_some(texts)
    })
    .await;
    assert_eq!(texts.len(), 4, "the opening and three parts: {texts:?}");
    let shown: String = texts[1..].concat();
    let squeeze = |text: &str| text.split_whitespace().collect::<String>();
    assert_eq!(
        squeeze(&shown),
        squeeze(&whole),
        "nothing lost in the split"
    );
    for draft in app.telegram.drafts(23701) {
        assert!(draft.text.encode_utf16().count() <= 4096, "a draft fits");
    }
    let messages = app.telegram.sent_messages(23701);
    assert_eq!(
        messages[1]["parse_mode"],
        serde_json::Value::Null,
        "the part Telegram could not parse came as plain text"
    );
    assert_eq!(
        button_data(&messages[3]),
        ["regen"],
        "buttons on the last part"
    );
    assert!(app.telegram.visible_draft(23701).is_none());
    app.stop().await;
}

#[actix_rt::test]
async fn regenerate_and_the_queue_keep_working_with_drafts() {
    let app = spawn_with_drafts(Backend::Sqlite).await;
    let user = 23801;
    app.start_dialog(user, "kai").await;
    // Two messages while the first reply is written: answered in order.
    app.llm.set_latency(Duration::from_millis(600));
    app.user_says(user, "first").await;
    app.user_says(user, "second").await;
    let texts = app.wait_for_last_text(user, "echo: second").await;
    assert_eq!(texts[1..], ["echo: first", "echo: second"]);
    app.llm.set_latency(Duration::ZERO);
    // "Regenerate" rewrites the reply in its own message (by edits: a draft would show the
    // new version below the old one).
    let last = app
        .telegram
        .sent_messages(user)
        .pop()
        .expect("the last reply");
    let message_id = last["message_id"].as_i64().expect("an id");
    let drafts_before = app.telegram.drafts(user).len();
    app.llm
        .script([LlmBehaviour::Reply("A different answer.".into())]);
    app.user_presses_on(user, "regen", message_id).await;
    app.wait_for_last_text(user, "A different answer.").await;
    let messages = app.telegram.sent_messages(user);
    assert_eq!(messages.len(), 3, "no new message: {messages:?}");
    assert_eq!(messages[2]["message_id"], message_id);
    assert_eq!(app.telegram.drafts(user).len(), drafts_before);
    // /stop stops a reply streaming as a draft, as the stop button does.
    app.llm.script([LlmBehaviour::Stream {
        pieces: pieces(20, 30),
        delay: Duration::from_millis(300),
    }]);
    app.user_says(user, "a long one").await;
    wait_until("a draft with text", || {
        app.telegram
            .visible_draft(user)
            .filter(|draft| draft.text.starts_with("p01-"))
    })
    .await;
    app.user_says(user, "/stop").await;
    wait_until("the stopped reply", || {
        app.telegram
            .sent_texts(user)
            .last()
            .is_some_and(|text| text.starts_with("p01-") && text.ends_with("\n\n(stopped)"))
            .then_some(())
    })
    .await;
    assert!(app.telegram.visible_draft(user).is_none());
    app.stop().await;
}

#[actix_rt::test]
async fn the_fake_bot_api_refuses_drafts_as_telegram_does() {
    let telegram = FakeTelegram::start().await;
    let url = format!("{}/bot123:T/sendMessageDraft", telegram.api_url());
    let client = reqwest::Client::new();
    let call = |body: serde_json::Value| {
        let request = client.post(&url).json(&body);
        async move {
            let response = request.send().await.expect("the fake answers");
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.expect("JSON");
            (
                status,
                body["description"].as_str().unwrap_or("").to_owned(),
            )
        }
    };
    let long = "x".repeat(4097);
    for (body, expected) in [
        (
            serde_json::json!({"chat_id": -100, "draft_id": 1, "text": "a"}),
            "private chats",
        ),
        (
            serde_json::json!({"chat_id": 5, "draft_id": 0, "text": "a"}),
            "non-zero",
        ),
        (
            serde_json::json!({"chat_id": 5, "text": "a"}),
            "draft_id is required",
        ),
        (
            serde_json::json!({"chat_id": 5, "draft_id": 1, "text": long}),
            "too long",
        ),
        (
            serde_json::json!({"chat_id": 5, "draft_id": 1, "can_stop": "yes"}),
            "Boolean",
        ),
    ] {
        let (status, description) = call(body).await;
        assert_eq!(status, 400, "{description}");
        assert!(description.contains(expected), "{description}");
    }
    let (status, _) = call(serde_json::json!({"chat_id": 5, "draft_id": 7, "text": ""})).await;
    assert_eq!(status, 200, "an empty draft is \"Thinking…\"");
    assert_eq!(
        telegram.visible_draft(5).map(|draft| draft.draft_id),
        Some(7)
    );
    assert!(
        telegram.drafts(-100).is_empty(),
        "refused drafts are not shown"
    );
    telegram.forget_drafts();
    let (status, _) = call(serde_json::json!({"chat_id": 5, "draft_id": 7, "text": "a"})).await;
    assert_eq!(status, 404, "a server without the method");
    telegram.stop().await;
}

#[actix_rt::test]
async fn a_reply_a_crash_caught_on_its_way_is_offered_never_sent_twice() {
    let app = spawn_with_drafts(Backend::Sqlite).await;
    let user = 23901;
    app.start_dialog(user, "mira").await;
    // The finished reply's sendMessage never comes back: the process dies meanwhile.
    app.telegram.hold_sends(user);
    app.user_says(user, "tell me about the mill").await;
    app.stored_when(user, "the reply stored on its way", |stored| {
        stored
            .last()
            .is_some_and(|last| last.0 == "assistant" && last.2 == "delivering")
    })
    .await;
    let app = app.crash_and_restart().await;
    app.telegram.release_sends();
    let reply = "echo: tell me about the mill";
    let notice = wait_until("the notice", || {
        app.telegram
            .sent_messages(user)
            .into_iter()
            .find(|message| {
                message["text"]
                    .as_str()
                    .is_some_and(|text| text.starts_with("A restart caught my last reply"))
            })
    })
    .await;
    let text = notice["text"].as_str().unwrap_or_default();
    assert!(text.contains(reply), "it quotes the reply: {text}");
    let copies = |app: &TestApp| {
        app.telegram
            .sent_texts(user)
            .iter()
            .filter(|sent| sent.as_str() == reply)
            .count()
    };
    assert!(copies(&app) <= 1, "never sent twice unasked");
    let show = button_data(&notice);
    assert_eq!(show.len(), 1, "{notice}");
    assert!(show[0].starts_with("show:"), "{show:?}");
    let before = copies(&app);
    app.user_presses(user, &show[0]).await;
    app.wait_for_last_text(user, reply).await;
    assert_eq!(
        copies(&app),
        before + 1,
        "shown once more, because the user asked"
    );
    let shown = app.telegram.sent_messages(user).pop().expect("the reply");
    assert_eq!(button_data(&shown), ["regen"]);
    assert_eq!(
        app.metric("vitte_recovered_replies_total{outcome=\"offered\"}")
            .await,
        1.0
    );
    app.stop().await;
}
