//! A Telegram user chats with a persona end to end.

use std::time::Duration;

use crate::on_both_backends;
use crate::support::*;

on_both_backends!(
    start_shows_personas_and_a_pick_sends_the_greeting,
    a_message_reaches_the_llm_with_persona_and_history_and_the_reply_is_stored,
    the_conversation_continues_after_a_restart,
    a_redelivered_update_gets_one_reply,
    two_users_are_answered_concurrently,
    five_rapid_messages_are_answered_in_order,
    long_replies_are_split_and_bad_markdown_is_resent_plain,
    help_lists_the_commands,
    long_polling_delivers_updates_too,
);

async fn start_shows_personas_and_a_pick_sends_the_greeting(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.user_says(1001, "/start").await;
    app.wait_for_texts(1001, 1).await;
    let gallery = &app.telegram.sent_messages(1001)[0];
    assert_eq!(
        button_data(gallery),
        [
            "p:arlo", "p:elena", "p:iris", "p:kai", "p:mira", "p:nova", "p:pavel", "p:sable",
            "p:zephyr"
        ]
    );
    let text = gallery["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("Mira — Keeper of a lighthouse"),
        "each persona with its tagline: {text}"
    );
    assert!(
        text.contains("Sable (18+)"),
        "adult personas are marked: {text}"
    );

    // A persona's card: its description and its stories.
    app.user_presses(1001, "p:mira").await;
    app.wait_for_texts(1001, 2).await;
    let card = &app.telegram.sent_messages(1001)[1];
    let card_text = card["text"].as_str().unwrap_or_default();
    assert!(card_text.contains("Stormhead lighthouse"), "{card_text}");
    assert!(card_text.contains("Choose a story"), "{card_text}");
    let stories = button_data(card);
    assert!(
        stories.len() >= 5,
        "four or more stories and Back: {stories:?}"
    );
    assert!(
        stories[..stories.len() - 1]
            .iter()
            .all(|data| data.starts_with("s:mira:"))
    );
    assert_eq!(stories.last().map(String::as_str), Some("g"));

    let story = first_story("mira");
    app.user_presses(1001, &format!("s:mira:{story}")).await;
    let texts = app.wait_for_texts(1001, 3).await;
    let opening = story_opening("mira", &story, "User1001");
    assert!(texts[2].starts_with("Dialog 1: Mira — "), "{}", texts[2]);
    assert!(
        texts[2].ends_with(&opening),
        "the opening follows: {}",
        texts[2]
    );
    assert!(
        !texts[2].contains("{{"),
        "no placeholder left: {}",
        texts[2]
    );
    wait_until("the button acknowledged", || {
        (!app.telegram.calls_to("answerCallbackQuery").is_empty()).then_some(())
    })
    .await;
    app.stop().await;
}

async fn a_message_reaches_the_llm_with_persona_and_history_and_the_reply_is_stored(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    app.start_dialog(1002, "arlo").await;
    app.llm.set_latency(Duration::from_millis(300));
    app.user_says(1002, "I found this letter under my door")
        .await;
    let texts = app.wait_for_texts(1002, 2).await;
    assert_eq!(texts[1], "echo: I found this letter under my door");

    let request = app.llm.requests().pop().expect("one LLM request");
    let messages = request_texts(&request);
    assert_eq!(messages[0].0, "system");
    assert!(
        messages[0].1.contains("retired to a flat above a"),
        "persona description in the system prompt"
    );
    assert!(messages[0].1.contains("User1002"), "{{user}} replaced");
    assert_eq!(messages[1].0, "assistant", "the story's opening is history");
    assert_eq!(
        messages[1].1,
        story_opening("arlo", &first_story("arlo"), "User1002")
    );
    assert_eq!(
        messages[2],
        (
            "user".to_owned(),
            "I found this letter under my door".to_owned()
        )
    );
    assert_eq!(
        messages.last().map(|m| m.0.as_str()),
        Some("system"),
        "post-history instructions last"
    );
    assert_eq!(request["model"], app.settings.llm.model.as_str());

    let placeholder = app.telegram.calls_to("sendMessage");
    assert!(
        placeholder
            .iter()
            .any(|call| call.body["text"] == "… typing"),
        "a placeholder while the LLM works"
    );
    let stored = app
        .stored_when(1002, "the reply stored", |stored| stored.len() == 3)
        .await;
    let stored: Vec<(&str, &str)> = stored
        .iter()
        .map(|(role, text, _)| (role.as_str(), text.as_str()))
        .collect();
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[1], ("user", "I found this letter under my door"));
    assert_eq!(
        stored[2],
        ("assistant", "echo: I found this letter under my door")
    );
    app.stop().await;
}

async fn the_conversation_continues_after_a_restart(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.start_dialog(1003, "nova").await;
    app.user_says(1003, "My name is Ann").await;
    app.wait_for_texts(1003, 2).await;

    let app = app.restart().await;
    app.user_says(1003, "What is my name?").await;
    let texts = app.wait_for_texts(1003, 3).await;
    assert_eq!(texts[2], "echo: What is my name?");
    let request = app
        .llm
        .requests()
        .pop()
        .expect("a request after the restart");
    let messages = request_texts(&request);
    assert!(
        messages
            .iter()
            .any(|(role, text)| role == "user" && text == "My name is Ann"),
        "history from before the restart: {messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|(role, text)| role == "assistant" && text == "echo: My name is Ann"),
        "the earlier reply too"
    );
    assert!(messages[0].1.contains("Long Patience"), "same persona");
    app.stop().await;
}

async fn a_redelivered_update_gets_one_reply(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.start_dialog(1004, "mira").await;
    let update = text_update(app.next_update_id(), 1004, "User1004", "en", "hello once");
    assert_eq!(app.post_update(&update).await, reqwest::StatusCode::OK);
    assert_eq!(app.post_update(&update).await, reqwest::StatusCode::OK);
    app.wait_for_texts(1004, 2).await;
    // A later message is answered after the duplicate would have been: nothing in between.
    app.user_says(1004, "second").await;
    let texts = app.wait_for_texts(1004, 3).await;
    assert_eq!(texts[1..], ["echo: hello once", "echo: second"]);
    assert_eq!(app.llm.requests().len(), 2);
    assert_eq!(app.metric("telegram_duplicate_updates_total").await, 1.0);
    app.stop().await;
}

async fn two_users_are_answered_concurrently(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.start_dialog(2001, "mira").await;
    app.start_dialog(2002, "arlo").await;
    app.llm.set_latency(Duration::from_millis(1500));
    app.user_says(2001, "from the first").await;
    app.user_says(2002, "from the second").await;
    // Both requests reach the LLM while neither has been answered: the sessions run at once.
    wait_until("both LLM requests in flight", || {
        let in_flight = app.llm.requests().len() == 2;
        let answered = app
            .telegram
            .sent_texts(2001)
            .iter()
            .chain(app.telegram.sent_texts(2002).iter())
            .any(|text| text.starts_with("echo:"));
        assert!(!answered || in_flight, "one user waited for the other");
        in_flight.then_some(())
    })
    .await;
    assert_eq!(app.wait_for_texts(2001, 2).await[1], "echo: from the first");
    assert_eq!(
        app.wait_for_texts(2002, 2).await[1],
        "echo: from the second"
    );
    app.stop().await;
}

async fn five_rapid_messages_are_answered_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.start_dialog(3001, "nova").await;
    app.llm.set_latency(Duration::from_millis(50));
    for index in 1..=5 {
        app.user_says(3001, &format!("message {index}")).await;
    }
    let texts = app.wait_for_texts(3001, 6).await;
    let expected: Vec<String> = (1..=5)
        .map(|index| format!("echo: message {index}"))
        .collect();
    assert_eq!(texts[1..], expected[..]);
    // Each request saw the previous exchange: handled one at a time.
    let last = app.llm.requests().pop().expect("requests");
    assert!(
        request_texts(&last)
            .iter()
            .any(|(_, text)| text == "echo: message 4")
    );
    app.stop().await;
}

async fn long_replies_are_split_and_bad_markdown_is_resent_plain(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.start_dialog(4001, "arlo").await;
    let long = "The rain kept falling. ".repeat(300);
    app.llm.script([LlmBehaviour::Reply(long.clone())]);
    app.user_says(4001, "tell me everything").await;
    let texts = app.wait_for_texts(4001, 3).await;
    assert!(
        texts[1..]
            .iter()
            .all(|text| text.encode_utf16().count() <= 4096)
    );
    assert_eq!(texts[1..].join(" "), long.trim());

    let odd = "Look at file_name_here and *this";
    app.llm.script([LlmBehaviour::Reply(odd.to_owned())]);
    app.user_says(4001, "and now?").await;
    let texts = app.wait_for_texts(4001, 4).await;
    assert_eq!(texts[3], odd, "delivered as plain text");
    // The reply is the final edit of its placeholder.
    let attempts: Vec<_> = app
        .telegram
        .calls_to("editMessageText")
        .into_iter()
        .filter(|call| call.body["text"] == odd)
        .collect();
    assert_eq!(attempts.len(), 2, "Markdown first, then plain");
    assert_eq!(attempts[0].body["parse_mode"], "Markdown");
    assert!(attempts[1].body.get("parse_mode").is_none());
    app.stop().await;
}

async fn help_lists_the_commands(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.user_says(5001, "/help").await;
    let texts = app.wait_for_texts(5001, 1).await;
    assert!(
        texts[0].contains("/start") && texts[0].contains("/help"),
        "{}",
        texts[0]
    );
    // A message before any persona was picked asks to pick one.
    app.user_says(5001, "hi").await;
    let texts = app.wait_for_texts(5001, 2).await;
    assert!(texts[1].contains("pick a character"), "{}", texts[1]);
    assert!(app.llm.requests().is_empty());
    app.stop().await;
}

async fn long_polling_delivers_updates_too(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        TestOptions {
            mode: vitte::config::TelegramMode::Polling,
            ..TestOptions::default()
        },
    )
    .await;
    let start = format!("s:mira:{}", first_story("mira"));
    app.telegram
        .push_update(callback_update(1, 6001, "Polly", "ru", &start));
    app.telegram
        .push_update(text_update(2, 6001, "Polly", "ru", "Привет!"));
    let texts = app.wait_for_texts(6001, 2).await;
    assert!(texts[0].starts_with("Диалог 1: Mira"), "{}", texts[0]);
    assert_eq!(texts[1], "echo: Привет!");
    app.stop().await;
}

#[actix_rt::test]
async fn a_message_without_text_gets_a_notice_not_silence() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut update = text_update(app.next_update_id(), 5101, "Geo", "en", "placeholder");
    let message = update["message"].as_object_mut().expect("a message");
    message.remove("text");
    message.insert(
        "location".into(),
        serde_json::json!({ "latitude": 59.93, "longitude": 30.33 }),
    );
    assert_eq!(app.post_update(&update).await, reqwest::StatusCode::OK);
    let texts = app.wait_for_texts(5101, 1).await;
    assert_eq!(texts[0], "I can only read text messages for now.");
    app.stop().await;
}

#[actix_rt::test]
async fn group_chats_are_ignored() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut update = text_update(app.next_update_id(), 5201, "Grouper", "en", "/start");
    update["message"]["chat"] =
        serde_json::json!({ "id": -100_777, "type": "group", "title": "Friends" });
    assert_eq!(app.post_update(&update).await, reqwest::StatusCode::OK);
    // A private message afterwards is answered; the group one never was.
    app.user_says(5201, "/help").await;
    app.wait_for_texts(5201, 1).await;
    assert!(app.telegram.sent_texts(-100_777).is_empty());
    assert_eq!(app.telegram.sent_texts(5201).len(), 1);
    app.stop().await;
}

#[actix_rt::test]
async fn concurrent_redeliveries_get_one_reply() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.start_dialog(5301, "nova").await;
    let update = text_update(app.next_update_id(), 5301, "User5301", "en", "only once");
    let (first, second, third) = tokio::join!(
        app.post_update(&update),
        app.post_update(&update),
        app.post_update(&update)
    );
    assert_eq!([first, second, third], [reqwest::StatusCode::OK; 3]);
    app.user_says(5301, "next").await;
    let texts = app.wait_for_texts(5301, 3).await;
    assert_eq!(texts[1..], ["echo: only once", "echo: next"]);
    assert_eq!(app.metric("telegram_duplicate_updates_total").await, 2.0);
    app.stop().await;
}

on_both_backends!(old_update_ids_are_pruned_and_recent_ones_kept);

async fn old_update_ids_are_pruned_and_recent_ones_kept(backend: Backend) {
    use vitte::storage::Accepted;
    use vitte_actors::ports::SessionStore;
    let app = TestApp::spawn(backend).await;
    let accept = || app.database.accept_update(900_001, None, "{}");
    assert_eq!(accept().await.expect("accept"), Accepted::New);
    assert_eq!(
        accept().await.expect("accept"),
        Accepted::Duplicate,
        "a duplicate"
    );
    let kept = app
        .database
        .prune_inbox(Duration::from_secs(3600))
        .await
        .expect("prune");
    assert_eq!(kept, 0, "a recent id is kept");
    assert_eq!(accept().await.expect("accept"), Accepted::Duplicate);
    let unhandled = app
        .database
        .prune_inbox(Duration::ZERO)
        .await
        .expect("prune");
    assert_eq!(
        unhandled, 0,
        "an update not handled yet is kept, however old"
    );
    app.database.finish_update(900_001).await.expect("finish");
    let pruned = app
        .database
        .prune_inbox(Duration::ZERO)
        .await
        .expect("prune");
    assert_eq!(pruned, 1);
    assert_eq!(accept().await.expect("accept"), Accepted::New, "forgotten");
    app.stop().await;
}

#[actix_rt::test]
async fn the_command_menu_is_registered_in_english_and_russian() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let calls = wait_until("two setMyCommands calls", || {
        let calls = app.telegram.calls_to("setMyCommands");
        (calls.len() == 2).then_some(calls)
    })
    .await;
    let commands = |call: &fake_telegram::RecordedCall| -> Vec<String> {
        call.body["commands"]
            .as_array()
            .map(|commands| {
                commands
                    .iter()
                    .filter_map(|command| command["command"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let expected = [
        "start",
        "dialogs",
        "settings",
        "stop",
        "language",
        "reset",
        "store",
        "status",
        "memory",
        "forget_me",
        "report",
        "timezone",
        "menu",
        "help",
    ];
    assert_eq!(commands(&calls[0]), expected);
    assert!(
        calls[0].body.get("language_code").is_none(),
        "the default menu"
    );
    assert_eq!(commands(&calls[1]), expected);
    assert_eq!(calls[1].body["language_code"], "ru");
    assert_eq!(
        calls[1].body["commands"][1]["description"],
        "Ваши три диалога"
    );
    app.stop().await;
}
