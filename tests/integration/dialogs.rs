//! Three dialog slots, their settings, returning to a story, age confirmation, safety rules
//! and the bot's languages, as a Telegram user experiences them.

use std::time::Duration;

use serde_json::Value;

use crate::on_both_backends;
use crate::support::*;

on_both_backends!(
    three_slots_hold_separate_dialogs_and_a_fourth_asks_which_to_replace,
    clear_asks_first_and_reset_clears_every_slot,
    returning_after_a_while_opens_with_a_greeting_that_recalls_the_story,
    settings_toggle_modes_per_slot_and_the_prompt_follows,
    an_adult_persona_asks_for_an_age_confirmation_once,
    safety_rules_answer_crises_refuse_and_withhold,
    the_bot_speaks_the_users_language_and_language_switches_it,
);

/// The chat's newest message (as it reads now), once there are `count` messages.
async fn newest_message(app: &TestApp, chat: i64, count: usize) -> Value {
    app.wait_for_texts(chat, count).await;
    app.telegram.sent_messages(chat).pop().expect("a message")
}

/// The title of a persona's story.
fn story_title(persona: &str, story: &str) -> String {
    let catalog = vitte_actors::domain::persona::PersonaCatalog::load_dir(std::path::Path::new(
        concat!(env!("CARGO_MANIFEST_DIR"), "/personas"),
    ))
    .expect("personas load");
    let persona = catalog.get(persona).expect("a persona");
    persona.story(story).expect("a story").title.clone()
}

/// The system prompt of the newest LLM request, and its other messages.
fn last_request(app: &TestApp) -> (String, Vec<(String, String)>) {
    let request = app.llm.requests().pop().expect("an LLM request");
    let mut messages = request_texts(&request);
    let system = messages.remove(0).1;
    (system, messages)
}

async fn three_slots_hold_separate_dialogs_and_a_fourth_asks_which_to_replace(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = 30001;
    app.start_dialog(user, "arlo").await;
    app.user_says(user, "clue one").await;
    app.wait_for_last_text(user, "echo: clue one").await;
    app.start_dialog(user, "mira").await;
    app.user_says(user, "lamp one").await;
    app.wait_for_last_text(user, "echo: lamp one").await;
    app.start_dialog(user, "nova").await;
    let texts = app.telegram.sent_texts(user);
    assert!(texts[4].starts_with("Dialog 3: Nova — "), "{}", texts[4]);
    app.user_says(user, "stars one").await;
    app.wait_for_last_text(user, "echo: stars one").await;
    let (system, history) = last_request(&app);
    assert!(system.contains("Long Patience"), "Nova's persona");
    assert!(
        !history
            .iter()
            .any(|(_, text)| text == "clue one" || text == "lamp one"),
        "each slot has its own history: {history:?}"
    );

    app.user_says(user, "/dialogs").await;
    let list = newest_message(&app, user, 7).await;
    let text = list["text"].as_str().unwrap_or_default();
    let arlo = story_title("arlo", &first_story("arlo"));
    let nova = story_title("nova", &first_story("nova"));
    assert!(
        text.contains(&format!("1. Arlo — {arlo} (just now)")),
        "{text}"
    );
    assert!(text.contains("2. Mira — "), "{text}");
    assert!(
        text.contains(&format!("3. Nova — {nova} (just now) ← current")),
        "{text}"
    );
    assert_eq!(
        button_data(&list),
        ["c:1", "k:1", "c:2", "k:2", "c:3", "k:3", "g"]
    );

    // "Continue" on slot 1: where its story stopped, and messages go there again.
    app.user_presses(user, "c:1").await;
    let switched = app
        .wait_for_last_text(user, &format!("Dialog 1: Arlo — {arlo}\n\necho: clue one"))
        .await;
    assert_eq!(switched.len(), 8);
    app.user_says(user, "clue two").await;
    app.wait_for_last_text(user, "echo: clue two").await;
    let (system, history) = last_request(&app);
    assert!(
        system.contains("retired to a flat above a"),
        "Arlo's persona"
    );
    assert!(history.iter().any(|(_, text)| text == "clue one"));
    assert!(!history.iter().any(|(_, text)| text == "lamp one"));

    // A fourth story never silently replaces one: the user picks the slot.
    let zephyr = first_story("zephyr");
    app.user_presses(user, &format!("s:zephyr:{zephyr}")).await;
    let question = newest_message(&app, user, 10).await;
    assert!(
        question["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("All three dialogs are in use"),
        "{question}"
    );
    let choices = button_data(&question);
    assert_eq!(choices.len(), 4, "{choices:?}");
    for (slot, data) in choices[..3].iter().enumerate() {
        // r:{slot}:{the dialog there}:{persona}:{story}, within Telegram's 64 bytes.
        let fields: Vec<&str> = data.split(':').collect();
        assert_eq!(fields[0], "r");
        assert_eq!(fields[1], (slot + 1).to_string());
        assert_eq!(fields[3..], ["zephyr", zephyr.as_str()]);
        assert!(data.len() <= 64);
    }
    assert_eq!(choices[3], "x");
    assert_eq!(
        button_labels(&question)[1],
        "Replace 2: Mira",
        "each slot is named"
    );
    app.user_presses(user, &choices[1]).await;
    let texts = app.wait_for_texts(user, 11).await;
    assert!(
        texts[10].starts_with("Dialog 2: Zephyr — "),
        "{}",
        texts[10]
    );
    // The same button again (a double tap, or days later) never replaces what is there now.
    app.user_presses(user, &choices[1]).await;
    app.wait_for_last_text(user, "Cancelled.").await;

    // The slots survive a restart; slot 2 is the active one.
    let app = app.restart().await;
    app.user_says(user, "/dialogs").await;
    let list = newest_message(&app, user, 13).await;
    let text = list["text"].as_str().unwrap_or_default();
    assert!(text.contains("1. Arlo — "), "{text}");
    assert!(
        text.contains("2. Zephyr — ") && text.contains("← current"),
        "{text}"
    );
    assert!(text.contains("3. Nova — "), "{text}");
    app.user_says(user, "a riddle for you").await;
    app.wait_for_last_text(user, "echo: a riddle for you").await;
    let (system, _) = last_request(&app);
    assert!(system.contains("Zephyr"), "messages go to the active slot");
    // The replaced dialog's messages are still stored.
    let stored = app.database.user_messages(user).await.expect("messages");
    assert!(
        stored
            .iter()
            .any(|message| message.slot == 2 && message.content == "lamp one")
    );
    app.stop().await;
}

async fn clear_asks_first_and_reset_clears_every_slot(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = 30101;
    app.start_dialog(user, "arlo").await;
    app.user_says(user, "the first clue").await;
    app.wait_for_last_text(user, "echo: the first clue").await;
    app.start_dialog(user, "mira").await;

    app.user_presses(user, "k:1").await;
    let question = newest_message(&app, user, 4).await;
    assert!(
        question["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Clear dialog 1 with Arlo?")
    );
    let confirm = button_data(&question)[0].clone();
    assert!(
        confirm.starts_with("k!:1:"),
        "names slot and dialog: {confirm}"
    );
    assert_eq!(button_data(&question)[1], "x");
    app.user_presses(user, "x").await;
    app.wait_for_last_text(user, "Cancelled.").await;

    app.user_presses(user, &confirm).await;
    let texts = app.wait_for_texts(user, 6).await;
    assert!(
        texts[5].starts_with("Dialog 1: Arlo — "),
        "the story starts again"
    );
    app.user_says(user, "a fresh start").await;
    app.wait_for_last_text(user, "echo: a fresh start").await;
    let (_, history) = last_request(&app);
    assert_eq!(history[1].1, "a fresh start");
    assert!(
        !history.iter().any(|(_, text)| text == "the first clue"),
        "the cleared history is gone for the persona"
    );
    // The old question's button is stale now: it clears nothing.
    app.user_presses(user, &confirm).await;
    app.wait_for_last_text(user, "Cancelled.").await;
    let (_, history) = last_request(&app);
    assert_eq!(history[1].1, "a fresh start");
    // Slot 2 was not touched.
    app.user_presses(user, "c:2").await;
    app.wait_for_texts(user, 9).await;

    app.user_says(user, "/reset").await;
    let question = newest_message(&app, user, 10).await;
    let stale = button_data(&question)[0].clone();
    assert!(stale.starts_with("reset!:"), "{stale}");
    assert_eq!(button_data(&question)[1], "x");
    // A story opened after the question: its old button no longer clears everything.
    app.start_dialog(user, "nova").await;
    app.user_presses(user, &stale).await;
    app.wait_for_last_text(user, "Cancelled.").await;
    app.user_says(user, "/reset").await;
    let question = newest_message(&app, user, 13).await;
    app.user_presses(user, &button_data(&question)[0]).await;
    app.wait_for_last_text(user, "All dialogs are cleared. /start to begin a new one.")
        .await;
    app.user_says(user, "/dialogs").await;
    let list = newest_message(&app, user, 15).await;
    assert_eq!(
        list["text"],
        "Your dialogs:\n1. (empty)\n2. (empty)\n3. (empty)"
    );
    app.user_says(user, "hello?").await;
    let texts = app.wait_for_texts(user, 16).await;
    assert!(
        texts[15].starts_with("First pick a character"),
        "{}",
        texts[15]
    );
    // Nothing was deleted from storage.
    let stored = app.database.user_messages(user).await.expect("messages");
    assert!(
        stored
            .iter()
            .any(|message| message.content == "the first clue")
    );
    app.stop().await;
}

async fn returning_after_a_while_opens_with_a_greeting_that_recalls_the_story(backend: Backend) {
    // The default welcome_back_after is 6 hours, on the app's clock.
    let app = TestApp::spawn(backend).await;
    let seven_hours = Duration::from_secs(7 * 3600);
    let user = 30201;
    app.start_dialog(user, "mira").await;
    app.user_says(user, "I hid the map under the stairs").await;
    app.wait_for_last_text(user, "echo: I hid the map under the stairs")
        .await;
    app.start_dialog(user, "arlo").await;
    app.clock.advance(seven_hours);

    let welcome = "*Mira looks up from the logbook.* The map is still under the stairs.";
    app.llm.script([LlmBehaviour::Reply(welcome.into())]);
    app.user_presses(user, "c:1").await;
    let texts = app.wait_for_last_text(user, welcome).await;
    let mira = story_title("mira", &first_story("mira"));
    assert_eq!(texts[texts.len() - 2], format!("Dialog 1: Mira — {mira}"));
    let (_, messages) = last_request(&app);
    let (role, directive) = messages.last().expect("messages");
    assert_eq!(role, "system");
    assert!(
        directive.contains("comes back to this story"),
        "{directive}"
    );
    assert!(
        messages
            .iter()
            .any(|(_, text)| text == "I hid the map under the stairs"),
        "the story so far is in the prompt"
    );
    app.stored_when(user, "the welcome stored", |stored| {
        stored.last().is_some_and(|m| m.1 == welcome)
    })
    .await;

    // Writing after a while (no "Continue"): the reply greets first.
    app.clock.advance(seven_hours);
    app.user_says(user, "I am back").await;
    app.wait_for_last_text(user, "echo: I am back").await;
    let (_, messages) = last_request(&app);
    let (_, directive) = messages.last().expect("messages");
    assert!(
        directive.contains("Begin Mira's reply with a short greeting"),
        "{directive}"
    );

    // Without the LLM the persona still greets, quoting where the story stopped.
    app.clock.advance(seven_hours);
    app.llm.set_down(true);
    app.user_presses(user, "c:2").await;
    let texts = wait_until("a welcome back without the LLM", || {
        let texts = app.telegram.sent_texts(user);
        texts
            .last()
            .is_some_and(|text| text.starts_with("*Arlo looks up.* You're back."))
            .then_some(texts)
    })
    .await;
    let opening = story_opening("arlo", &first_story("arlo"), &format!("User{user}"));
    let quoted: String = opening.chars().take(60).collect();
    assert!(
        texts.last().is_some_and(|t| t.contains(&quoted)),
        "{texts:?}"
    );
    app.stop().await;
}

async fn settings_toggle_modes_per_slot_and_the_prompt_follows(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = 30301;
    // The modes are purchases: both unlocked first (two thank-you messages).
    app.user_buys(user, "intense_mode").await;
    app.user_buys(user, "fantasy_scenes").await;
    app.start_dialog(user, "pavel").await;
    app.user_says(user, "/settings").await;
    let settings = newest_message(&app, user, 4).await;
    assert_eq!(settings["text"], "Settings of dialog 1 (Pavel):");
    assert_eq!(
        button_labels(&settings),
        [
            "Intense mode: off",
            "Fantasy scenes: off",
            "🔔 Notifications"
        ]
    );
    let message_id = settings["message_id"].as_i64().expect("an id");
    app.user_presses_on(user, "t:intense", message_id).await;
    wait_until("the settings edited in place", || {
        let messages = app.telegram.sent_messages(user);
        let settings = messages.iter().find(|m| m["message_id"] == message_id)?;
        (button_labels(settings)
            == [
                "Intense mode: on",
                "Fantasy scenes: off",
                "🔔 Notifications",
            ])
        .then_some(())
    })
    .await;
    assert_eq!(app.telegram.sent_texts(user).len(), 4, "no new message");

    app.user_says(user, "a storm is coming").await;
    app.wait_for_last_text(user, "echo: a storm is coming")
        .await;
    let (system, _) = last_request(&app);
    assert!(system.contains("Intense mode is on"), "{system}");
    assert!(!system.contains("Keep the tone warm"));
    assert!(!system.contains("Fantasy scenes are on"));

    // Another slot has its own modes.
    app.start_dialog(user, "iris").await;
    app.user_says(user, "/settings").await;
    let settings = newest_message(&app, user, 7).await;
    assert_eq!(settings["text"], "Settings of dialog 2 (Iris):");
    let message_id = settings["message_id"].as_i64().expect("an id");
    app.user_presses_on(user, "t:fantasy", message_id).await;
    wait_until("fantasy scenes on", || {
        let messages = app.telegram.sent_messages(user);
        let settings = messages.iter().find(|m| m["message_id"] == message_id)?;
        (button_labels(settings)
            == [
                "Intense mode: off",
                "Fantasy scenes: on",
                "🔔 Notifications",
            ])
        .then_some(())
    })
    .await;
    app.user_says(user, "show me the greenhouse").await;
    app.wait_for_last_text(user, "echo: show me the greenhouse")
        .await;
    let (system, _) = last_request(&app);
    assert!(
        system.contains("Keep the tone warm"),
        "normal mode in slot 2"
    );
    assert!(system.contains("Fantasy scenes are on"), "{system}");

    // Stored: after a restart slot 1 is still intense.
    let app = app.restart().await;
    app.user_presses(user, "c:1").await;
    app.wait_for_texts(user, 9).await;
    app.user_says(user, "still here?").await;
    app.wait_for_last_text(user, "echo: still here?").await;
    let (system, _) = last_request(&app);
    assert!(system.contains("Intense mode is on"), "{system}");

    // Clearing slot 1 starts its story again with the same modes, stored with it.
    let before = app.telegram.sent_texts(user).len();
    app.user_presses(user, "k:1").await;
    let question = newest_message(&app, user, before + 1).await;
    let confirm = button_data(&question)[0].clone();
    let stored_before = app.dialog_messages(user).await.len();
    app.user_presses(user, &confirm).await;
    app.wait_for_texts(user, before + 2).await;
    app.stored_when(user, "the cleared slot's opening stored", |stored| {
        stored.len() > stored_before
    })
    .await;
    let app = app.restart().await;
    app.user_says(user, "after the clear").await;
    app.wait_for_last_text(user, "echo: after the clear").await;
    let (system, _) = last_request(&app);
    assert!(system.contains("Intense mode is on"), "{system}");
    app.stop().await;
}

async fn an_adult_persona_asks_for_an_age_confirmation_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = 30401;
    let story = first_story("sable");
    app.user_presses(user, &format!("s:sable:{story}")).await;
    let question = newest_message(&app, user, 1).await;
    assert!(
        question["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("This character is for adults only"),
        "{question}"
    );
    assert_eq!(
        button_data(&question),
        [format!("a:sable:{story}"), "g".into()]
    );
    // Without the confirmation there is no dialog.
    app.user_says(user, "hello").await;
    let texts = app.wait_for_texts(user, 2).await;
    assert!(
        texts[1].starts_with("First pick a character"),
        "{}",
        texts[1]
    );

    app.user_presses(user, &format!("a:sable:{story}")).await;
    let texts = app.wait_for_texts(user, 3).await;
    assert!(texts[2].starts_with("Dialog 1: Sable — "), "{}", texts[2]);
    // Asked once: another of her stories starts at once, also after a restart.
    let app = app.restart().await;
    let catalog = vitte_actors::domain::persona::PersonaCatalog::load_dir(std::path::Path::new(
        concat!(env!("CARGO_MANIFEST_DIR"), "/personas"),
    ))
    .expect("personas");
    let second = catalog.get("sable").expect("sable").stories[1].id.clone();
    app.user_presses(user, &format!("s:sable:{second}")).await;
    let texts = app.wait_for_texts(user, 4).await;
    assert!(texts[3].starts_with("Dialog 2: Sable — "), "{}", texts[3]);
    app.stop().await;
}

async fn safety_rules_answer_crises_refuse_and_withhold(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = 30501;
    app.start_dialog(user, "kai").await;
    app.user_says(user, "honestly I want to kill myself").await;
    let texts = app.wait_for_texts(user, 2).await;
    assert!(
        texts[1].starts_with("I'm stepping out of the story"),
        "{}",
        texts[1]
    );
    assert!(texts[1].contains("findahelpline.com"), "help resources");
    app.user_says(user, "write a sexy child scene").await;
    let texts = app.wait_for_texts(user, 3).await;
    assert!(
        texts[2].starts_with("I can't write anything sexual involving minors"),
        "{}",
        texts[2]
    );
    assert!(app.llm.requests().is_empty(), "neither reached the LLM");

    app.llm.script([LlmBehaviour::Reply(
        "The file shows nude photos of a minor.".into(),
    )]);
    app.user_says(user, "what is in the file?").await;
    let texts = app
        .wait_for_last_text(
            user,
            "(I cannot show that reply. Please write something else, or press Regenerate.)",
        )
        .await;
    assert!(!texts.iter().any(|text| text.contains("nude")));
    let stored = app
        .stored_when(user, "the withheld reply stored", |stored| {
            stored.iter().any(|m| m.2 == "withheld")
        })
        .await;
    assert!(
        !stored
            .iter()
            .any(|(_, text, _)| text.contains("kill myself") || text.contains("sexy")),
        "refused messages are not part of the story"
    );
    // The withheld text is not in the next prompt.
    app.user_says(user, "never mind").await;
    app.wait_for_last_text(user, "echo: never mind").await;
    let (_, history) = last_request(&app);
    assert!(!history.iter().any(|(_, text)| text.contains("nude")));
    assert_eq!(
        app.metric("vitte_safety_interventions_total{kind=\"crisis\"}")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("vitte_safety_interventions_total{kind=\"refused\"}")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("vitte_safety_interventions_total{kind=\"output_withheld\"}")
            .await,
        1.0
    );
    app.stop().await;
}

/// A Russian-speaking user writes `text`.
async fn russian_user_says(app: &TestApp, user: i64, text: &str) {
    let update = text_update(app.next_update_id(), user, "Olga", "ru", text);
    assert_eq!(app.post_update(&update).await, reqwest::StatusCode::OK);
}

async fn the_bot_speaks_the_users_language_and_language_switches_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = 30601;
    russian_user_says(&app, user, "/help").await;
    let texts = app.wait_for_texts(user, 1).await;
    assert!(
        texts[0].contains("/start — выбрать персонажа"),
        "{}",
        texts[0]
    );
    russian_user_says(&app, user, "хочу покончить с собой").await;
    let texts = app.wait_for_texts(user, 2).await;
    assert!(
        texts[1].starts_with("Я ненадолго выйду из истории"),
        "{}",
        texts[1]
    );

    russian_user_says(&app, user, "/language").await;
    let question = newest_message(&app, user, 3).await;
    assert_eq!(question["text"], "Выберите язык бота:");
    assert_eq!(button_data(&question), ["l:ru", "l:en"]);
    let update = callback_update(app.next_update_id(), user, "Olga", "ru", "l:en");
    assert_eq!(app.post_update(&update).await, reqwest::StatusCode::OK);
    app.wait_for_last_text(user, "The bot now speaks English.")
        .await;
    russian_user_says(&app, user, "/help").await;
    let texts = app.wait_for_texts(user, 5).await;
    assert!(
        texts[4].contains("/start — choose a character"),
        "{}",
        texts[4]
    );

    // A Russian user reads the Russian gallery and opening.
    let olga = 30602;
    russian_user_says(&app, olga, "/start").await;
    let gallery = app.wait_for_texts(olga, 1).await;
    assert!(
        gallery[0].contains("Смотрительница маяка"),
        "{}",
        gallery[0]
    );
    let story = first_story("mira");
    for _ in 0..2 {
        // A double tap opens the story once.
        let update = callback_update(
            app.next_update_id(),
            olga,
            "Olga",
            "ru",
            &format!("s:mira:{story}"),
        );
        assert_eq!(app.post_update(&update).await, reqwest::StatusCode::OK);
    }
    let texts = app.wait_for_texts(olga, 3).await;
    assert!(
        texts[1].starts_with("Диалог 1: Mira — Штормовая ночь"),
        "{}",
        texts[1]
    );
    assert!(
        texts[1].contains("Пейте медленно"),
        "the Russian opening: {}",
        texts[1]
    );
    assert!(
        texts[2].starts_with("Диалог 1: Mira"),
        "shown again, not a second slot"
    );
    russian_user_says(&app, olga, "/dialogs").await;
    let list = app.wait_for_texts(olga, 4).await;
    assert!(list[3].contains("2. (пусто)"), "{}", list[3]);

    // The choice is stored.
    let app = app.restart().await;
    russian_user_says(&app, user, "/dialogs").await;
    let texts = app.wait_for_texts(user, 6).await;
    assert!(texts[5].starts_with("Your dialogs:"), "{}", texts[5]);
    app.stop().await;
}
