//! Long-term memory end to end: the fake LLM answers the keeper's extraction and summary
//! requests from their own scripts, and its `/embeddings` gives texts that share words
//! similar vectors.

use serde_json::Value;

use crate::on_both_backends;
use crate::support::{Backend, TestApp, request_texts, wait_until, wait_until_async};

on_both_backends!(
    a_fact_said_in_one_dialog_is_recalled_in_another_after_a_restart_and_never_by_another_user,
    duplicates_are_not_added_twice_and_a_contradiction_supersedes,
    forget_me_deletes_everything_but_the_payment_records,
    a_failing_or_slow_embeddings_endpoint_never_holds_a_reply,
    a_long_story_is_summarised_and_the_summary_stands_in_for_what_no_longer_fits,
    many_users_at_once_each_recall_only_their_own_facts,
);

fn fact(text: &str, category: &str) -> String {
    serde_json::json!({"facts": [{"text": text, "category": category, "importance": 4}]})
        .to_string()
}

/// The user writes `text` and waits until the persona's reply to it is stored.
async fn exchange(app: &TestApp, user: i64, text: &str) {
    let reply = format!("echo: {text}");
    app.user_says(user, text).await;
    app.stored_when(user, &format!("the reply to {text:?}"), |stored| {
        stored.last().is_some_and(|(role, content, status)| {
            role == "assistant" && *content == reply && status == "complete"
        })
    })
    .await;
}

/// The newest user message of an LLM request.
fn last_user_text(request: &Value) -> String {
    request_texts(request)
        .into_iter()
        .rev()
        .find(|(role, _)| role == "user")
        .map(|(_, content)| content)
        .unwrap_or_default()
}

/// The system message of the newest reply request whose last user message is `said`.
fn prompt_for(app: &TestApp, said: &str) -> String {
    app.llm
        .requests()
        .iter()
        .rev()
        .find(|request| last_user_text(request) == said)
        .map(|request| request_texts(request)[0].1.clone())
        .unwrap_or_else(|| panic!("no request answered {said:?}"))
}

async fn current_memories(app: &TestApp, user: i64) -> Vec<String> {
    app.database
        .memory_records(user)
        .await
        .expect("memories")
        .into_iter()
        .filter(|record| record.superseded_by.is_none())
        .map(|record| record.text)
        .collect()
}

async fn wait_for_memories(app: &TestApp, user: i64, count: usize) {
    wait_until_async(&format!("{count} memories of user {user}"), || async {
        current_memories(app, user).await.len() >= count
    })
    .await;
}

async fn a_fact_said_in_one_dialog_is_recalled_in_another_after_a_restart_and_never_by_another_user(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let (ann, bob) = (50101, 50102);
    app.llm
        .script_facts([fact("User50101's dog is called Rex", "relationship")]);
    app.start_dialog(ann, "mira").await;
    for said in ["hello there", "I have a dog", "his name is Rex"] {
        exchange(&app, ann, said).await;
    }
    wait_for_memories(&app, ann, 1).await;
    let extraction = &app.llm.extraction_requests()[0];
    let conversation = &request_texts(extraction)[1].1;
    assert!(
        conversation.contains("User50101: his name is Rex"),
        "{conversation}"
    );
    assert_eq!(extraction["temperature"], 0.0);

    let app = app.restart().await;
    app.start_dialog(ann, "arlo").await;
    app.start_dialog(bob, "arlo").await;
    // Both ask at once; only Ann's prompt has her fact.
    app.user_says(bob, "how is my dog Rex").await;
    exchange(&app, ann, "how is my dog Rex").await;
    app.stored_when(bob, "Bob's reply", |stored| stored.len() >= 3)
        .await;
    let prompts: Vec<String> = app
        .llm
        .requests()
        .iter()
        .filter(|request| last_user_text(request) == "how is my dog Rex")
        .map(|request| request_texts(request)[0].1.clone())
        .collect();
    assert_eq!(prompts.len(), 2);
    let with_fact: Vec<&String> = prompts
        .iter()
        .filter(|prompt| prompt.contains("- User50101's dog is called Rex"))
        .collect();
    assert_eq!(with_fact.len(), 1, "only Ann's prompt has her memory");
    assert!(with_fact[0].contains("What you remember about User50101:"));
    assert!(!app.llm.embedding_requests().is_empty());
    assert!(current_memories(&app, bob).await.is_empty());
    app.stop().await;
}

async fn duplicates_are_not_added_twice_and_a_contradiction_supersedes(backend: Backend) {
    let app = TestApp::spawn_adjusted(backend, |settings| {
        settings.streaming.edit_interval = std::time::Duration::from_millis(100);
        // Shorter vectors, as operators may ask of text-embedding-3 models.
        settings.memory.embeddings.dimensions = Some(16);
    })
    .await;
    let user = 50201;
    let berlin = fact("User50201 lives in Berlin", "identity");
    app.llm.script_facts([berlin.clone(), berlin]);
    app.start_dialog(user, "mira").await;
    for said in ["one", "two", "three", "four", "five", "six"] {
        exchange(&app, user, said).await;
    }
    wait_until("two extractions", || {
        (app.llm.extraction_requests().len() >= 2).then_some(())
    })
    .await;
    wait_until_async("the duplicate counted", || async {
        app.metric("memory_saved_total{outcome=\"duplicate\"}")
            .await
            >= 1.0
    })
    .await;
    assert_eq!(
        current_memories(&app, user).await,
        ["User50201 lives in Berlin"]
    );

    // The model names stored fact 1 (listed in its request) as contradicted.
    let paris = serde_json::json!({"facts": [{
        "text": "User50201 lives in Paris now", "category": "identity",
        "importance": 5, "replaces": 1
    }]});
    app.llm.script_facts([paris.to_string()]);
    for said in ["seven", "eight", "nine"] {
        exchange(&app, user, said).await;
    }
    wait_until_async("the contradiction stored", || async {
        current_memories(&app, user).await == ["User50201 lives in Paris now"]
    })
    .await;
    let third = &app.llm.extraction_requests()[2];
    assert!(
        request_texts(third)[0]
            .1
            .contains("1. User50201 lives in Berlin")
    );
    let records = app.database.memory_records(user).await.expect("records");
    assert_eq!(records.len(), 2, "the old fact is kept as history");
    assert_eq!(records[0].superseded_by, Some(records[1].id));

    exchange(&app, user, "do you remember where I live, Berlin or Paris").await;
    let prompt = prompt_for(&app, "do you remember where I live, Berlin or Paris");
    assert!(
        prompt.contains("- User50201 lives in Paris now"),
        "{prompt}"
    );
    assert!(
        !prompt.contains("lives in Berlin"),
        "a superseded fact is never recalled"
    );
    app.stop().await;
}

async fn forget_me_deletes_everything_but_the_payment_records(backend: Backend) {
    let app = TestApp::spawn_adjusted(backend, |settings| {
        settings.limits.free_daily_messages = 5;
    })
    .await;
    let user = 50301;
    app.llm
        .script_facts([fact("User50301 is a nurse", "identity")]);
    app.user_buys(user, "fantasy_scenes").await;
    app.start_dialog(user, "mira").await;
    for said in ["hi", "I work nights", "as a nurse"] {
        exchange(&app, user, said).await;
    }
    wait_for_memories(&app, user, 1).await;
    let before = app.database.footprint(user).await.expect("footprint");
    assert!(before.messages > 0 && before.memories == 1 && before.profile == 1);

    app.user_says(user, "/memory").await;
    let listing = wait_until("the memory list", || {
        app.telegram
            .sent_texts(user)
            .pop()
            .filter(|text| text.starts_with("What Mira remembers about you"))
    })
    .await;
    assert!(listing.contains("1. User50301 is a nurse"), "{listing}");

    app.user_says(user, "/forget_me").await;
    wait_until("the question", || {
        app.telegram
            .sent_texts(user)
            .pop()
            .filter(|text| text.starts_with("Delete everything about you?"))
    })
    .await;
    app.user_presses(user, "forgetme!").await;
    wait_until("the confirmation", || {
        app.telegram
            .sent_texts(user)
            .pop()
            .filter(|text| text.starts_with("Done: everything about you is deleted."))
    })
    .await;
    let after = app.database.footprint(user).await.expect("footprint");
    assert_eq!(
        (
            after.profile,
            after.dialogs,
            after.messages,
            after.memories,
            after.summaries
        ),
        (0, 0, 0, 0, 0),
        "{after:?}"
    );
    assert_eq!(after.token_usage, 0);
    assert_eq!(after.payments, 1, "the payment record stays");

    // Nothing comes back, from storage or from the session's cache.
    app.start_dialog(user, "mira").await;
    exchange(&app, user, "what do I do for a living, nurse?").await;
    let prompt = prompt_for(&app, "what do I do for a living, nurse?");
    assert!(!prompt.contains("nurse"), "{prompt}");

    // Today's replies still count (3 before, 1 after, of 5), also after a restart: deleting
    // one's data is no way around the daily limit.
    let app = app.restart().await;
    exchange(&app, user, "one more").await;
    app.user_says(user, "and another").await;
    wait_until("the daily limit", || {
        app.telegram
            .sent_texts(user)
            .pop()
            .filter(|text| text.starts_with("That was all 5 free messages for today"))
    })
    .await;
    app.stop().await;
}

async fn a_failing_or_slow_embeddings_endpoint_never_holds_a_reply(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = 50401;
    app.llm
        .script_facts([fact("User50401 plays the cello", "identity")]);
    app.start_dialog(user, "mira").await;
    for said in ["hi", "I play music", "the cello"] {
        exchange(&app, user, said).await;
    }
    wait_for_memories(&app, user, 1).await;

    // Embeddings that never answer: the reply comes without memories, past the deadline.
    app.llm.hold_embeddings();
    exchange(&app, user, "shall I play the cello for you").await;
    let prompt = prompt_for(&app, "shall I play the cello for you");
    assert!(!prompt.contains("What you remember"), "{prompt}");
    assert_eq!(
        app.metric("memory_recall_skipped_total{reason=\"deadline\"}")
            .await,
        1.0
    );
    app.llm.release_embeddings();

    // Embeddings that fail: the same.
    app.llm.set_embeddings_down(true);
    exchange(&app, user, "the cello again").await;
    assert!(
        app.metric("memory_recall_skipped_total{reason=\"embedding_failed\"}")
            .await
            >= 1.0
    );
    app.llm.set_embeddings_down(false);

    // Back up: recalled again.
    exchange(&app, user, "do you like the cello").await;
    let prompt = prompt_for(&app, "do you like the cello");
    assert!(prompt.contains("- User50401 plays the cello"), "{prompt}");
    app.stop().await;
}

async fn a_long_story_is_summarised_and_the_summary_stands_in_for_what_no_longer_fits(
    backend: Backend,
) {
    let app = TestApp::spawn_adjusted(backend, |settings| {
        settings.llm.context_tokens = 5000;
        settings.llm.max_reply_tokens = 800;
        settings.memory.summary_chunk = 2;
        settings.streaming.edit_interval = std::time::Duration::from_millis(100);
    })
    .await;
    let user = 50501;
    app.llm
        .set_summary_reply("User50501 and Mira crossed the storm together.");
    app.start_dialog(user, "mira").await;
    let long = "the waves rise higher and the lamp flickers in the wind ".repeat(24);
    let long = long.trim_end();
    let mut said = Vec::new();
    for round in 0..12 {
        let text = format!("{round}: {long}");
        exchange(&app, user, &text).await;
        said.push(text);
        if !app.llm.summary_requests().is_empty() {
            break;
        }
    }
    let summaries = wait_until_async("the summary stored", || async {
        !app.database
            .summaries(user)
            .await
            .expect("summaries")
            .is_empty()
    });
    summaries.await;
    let request = &app.llm.summary_requests()[0];
    let conversation = &request_texts(request)[1].1;
    assert!(
        conversation.contains("User50501: 0: the waves"),
        "the oldest part is folded"
    );

    exchange(&app, user, "what happened so far").await;
    let prompt = prompt_for(&app, "what happened so far");
    assert!(
        prompt.contains("The story so far:\nUser50501 and Mira crossed the storm together."),
        "{prompt}"
    );
    let newest: Value = app.llm.requests().pop().expect("a request");
    let history = request_texts(&newest);
    assert!(
        !history
            .iter()
            .any(|(_, content)| content.starts_with("0: the waves")),
        "what the summary covers is not sent again"
    );
    app.stop().await;
}

async fn many_users_at_once_each_recall_only_their_own_facts(backend: Backend) {
    let app = TestApp::spawn_adjusted(backend, |settings| {
        settings.streaming.edit_interval = std::time::Duration::from_millis(100);
        // 32 replies within a second or two: above the default provider limit's burst.
        settings.llm.rate_limit.per_minute = 6_000;
        settings.llm.rate_limit.burst = 100;
    })
    .await;
    app.llm
        .set_facts_default(&fact("{speaker} keeps the secret harbour code", "identity"));
    let users: Vec<i64> = (50601..50609).collect();
    for user in &users {
        app.start_dialog(*user, "mira").await;
    }
    // Everyone talks at once.
    let shared = &app;
    let talks = users.iter().map(|user| async move {
        for said in ["hello", "I have a secret", "the harbour code"] {
            exchange(shared, *user, said).await;
        }
    });
    futures::future::join_all(talks).await;
    for user in &users {
        wait_for_memories(&app, *user, 1).await;
        assert_eq!(
            current_memories(&app, *user).await,
            [format!("User{user} keeps the secret harbour code")]
        );
    }
    let asks = users
        .iter()
        .map(|user| exchange(shared, *user, "what is my secret harbour code"));
    futures::future::join_all(asks).await;
    let question = "what is my secret harbour code";
    let prompts: Vec<String> = app
        .llm
        .requests()
        .iter()
        .filter(|request| last_user_text(request) == question)
        .map(|request| request_texts(request)[0].1.clone())
        .collect();
    assert_eq!(prompts.len(), users.len());
    for prompt in &prompts {
        let owners: Vec<&i64> = users
            .iter()
            .filter(|user| prompt.contains(&format!("- User{user} keeps")))
            .collect();
        assert_eq!(owners.len(), 1, "exactly one user's memory: {prompt}");
        assert!(
            prompt.contains(&format!("What you remember about User{}:", owners[0])),
            "and it is the asker's own: {prompt}"
        );
    }
    app.stop().await;
}
