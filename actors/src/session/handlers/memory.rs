//! What the user controls of memory: /memory lists what the active dialog's persona
//! remembers (paged), with a button to forget each item and one to forget everything;
//! /forget_me deletes everything about the user after confirmation. Forgetting goes through
//! the memory keeper (after the job it is doing, so nothing that job stores survives it)
//! and out of the session's cache at once.

use crate::domain::texts::fill;
use crate::memory::recall::MemoryIndex;
use crate::ports::memory::MemoryId;
use crate::ports::{Button, Keyboard};
use crate::session::buttons::ButtonData;
use crate::session::keyboards::{button, row};
use crate::session::state::SessionState;
use crate::session::turn::Turn;

/// Memories per page of /memory.
const PAGE_SIZE: usize = 8;

/// What /memory lists: the active dialog's persona (id and name) and the memories it may
/// recall, oldest first.
struct Listing {
    persona_id: String,
    persona_name: String,
    memories: Vec<(MemoryId, String)>,
}

/// The memories the active dialog's persona may recall; loads the cache if need be. `None`
/// (the user told) without a dialog or storage.
async fn listed(turn: &Turn<'_>, state: &mut SessionState) -> Option<Listing> {
    let Some(dialog) = state.active() else {
        turn.say(turn.texts.memory.no_dialog, None).await;
        return None;
    };
    let (persona_id, persona_name) = (dialog.persona.id.clone(), dialog.persona.name.clone());
    if state.memories.is_none() {
        match turn
            .deps
            .memory
            .store
            .current_memories(turn.sender.user_id)
            .await
        {
            Ok(stored) => state.memories = Some(MemoryIndex::new(stored)),
            Err(error) => {
                turn.storage_failed(&error, "a memory list").await;
                return None;
            }
        }
    }
    let memories = state
        .memories
        .as_ref()
        .map(|index| {
            index
                .in_scope(&persona_id)
                .map(|memory| (memory.id, memory.text.clone()))
                .collect()
        })
        .unwrap_or_default();
    Some(Listing {
        persona_id,
        persona_name,
        memories,
    })
}

/// /memory, page `page` (from 0).
pub(super) async fn show_memory(turn: &Turn<'_>, state: &mut SessionState, page: u16) {
    let texts = turn.texts.memory;
    let Some(Listing {
        persona_id,
        persona_name: persona,
        memories,
    }) = listed(turn, state).await
    else {
        return;
    };
    if memories.is_empty() {
        let empty = fill(texts.nothing_remembered, &[("persona", &persona)]);
        turn.say(&empty, None).await;
        return;
    }
    let pages = memories.len().div_ceil(PAGE_SIZE);
    let page = usize::from(page).min(pages - 1);
    let first = page * PAGE_SIZE;
    let shown = &memories[first..(first + PAGE_SIZE).min(memories.len())];
    let mut text = fill(
        texts.list_title,
        &[
            ("persona", &persona),
            ("page", &(page + 1).to_string()),
            ("pages", &pages.to_string()),
        ],
    );
    let mut forget_buttons: Vec<Button> = Vec::new();
    for (offset, (id, memory)) in shown.iter().enumerate() {
        let number = (first + offset + 1).to_string();
        text.push_str(&format!("\n{number}. {memory}"));
        let data = ButtonData::ForgetMemory {
            memory: *id,
            page: page as u16,
        };
        forget_buttons.push(button(&fill(texts.forget_item, &[("n", &number)]), data));
    }
    let mut rows: Vec<Vec<Button>> = forget_buttons.chunks(4).map(<[Button]>::to_vec).collect();
    let mut paging = Vec::new();
    if page > 0 {
        let back = ButtonData::MemoryPage {
            page: (page - 1) as u16,
        };
        paging.push(button(texts.previous_page, back));
    }
    if page + 1 < pages {
        let more = ButtonData::MemoryPage {
            page: (page + 1) as u16,
        };
        paging.push(button(texts.next_page, more));
    }
    if !paging.is_empty() {
        rows.push(paging);
    }
    let everything = ButtonData::ForgetAllMemories {
        persona: persona_id,
    };
    rows.push(vec![button(texts.forget_all, everything)]);
    turn.say(&text, Some(&Keyboard { rows })).await;
}

/// A memory's 🗑: forgets it (if it is the user's), then shows the page again.
pub(super) async fn forget_memory(
    turn: &Turn<'_>,
    state: &mut SessionState,
    memory: MemoryId,
    page: u16,
) {
    if forget(turn, state, vec![memory]).await {
        turn.say(turn.texts.memory.forgotten_one, None).await;
        show_memory(turn, state, page).await;
    }
}

/// "Forget everything": every memory the active dialog's persona may recall, if it is still
/// the persona whose list had the button (a stale button forgets nothing).
pub(super) async fn forget_all_memories(turn: &Turn<'_>, state: &mut SessionState, persona: &str) {
    let Some(listing) = listed(turn, state).await else {
        return;
    };
    if listing.persona_id != persona {
        turn.say(turn.texts.cancelled, None).await;
        return;
    }
    let ids: Vec<MemoryId> = listing.memories.into_iter().map(|(id, _)| id).collect();
    let count = ids.len();
    if forget(turn, state, ids).await {
        let done = fill(
            turn.texts.memory.forgotten_all,
            &[("count", &count.to_string())],
        );
        turn.say(&done, None).await;
    }
}

/// Forgets `ids` through the keeper and drops them from the cache; tells the user on
/// failure.
async fn forget(turn: &Turn<'_>, state: &mut SessionState, ids: Vec<MemoryId>) -> bool {
    let keeper = &turn.deps.memory.keeper;
    match keeper.forget(turn.sender.user_id, Some(ids.clone())).await {
        Ok(_) => {
            if let Some(index) = state.memories.as_mut() {
                index.remove(&ids);
            }
            true
        }
        Err(error) => {
            tracing::warn!(%error, "could not forget memories");
            turn.say(turn.texts.memory.forget_failed, None).await;
            false
        }
    }
}

/// /forget_me: asks first.
pub(super) async fn ask_forget_me(turn: &Turn<'_>) {
    let texts = turn.texts;
    let keyboard = row(vec![
        button(texts.memory.forget_me_confirm, ButtonData::ForgetMe),
        button(texts.cancel_button, ButtonData::Cancel),
    ]);
    turn.say(texts.memory.forget_me_question, Some(&keyboard))
        .await;
}

/// /forget_me confirmed: everything about the user is deleted (the keeper drops their queued
/// work first); the session starts over with only what was bought and today's count.
pub(super) async fn forget_me(turn: &Turn<'_>, state: &mut SessionState) {
    let user_id = turn.sender.user_id;
    if let Err(error) = turn.deps.memory.keeper.forget(user_id, None).await {
        tracing::warn!(%error, "could not forget a user");
        turn.say(turn.texts.memory.forget_failed, None).await;
        return;
    }
    tracing::info!("a user's data was deleted at their request");
    *state = SessionState {
        entitlement: std::mem::take(&mut state.entitlement),
        usage: state.usage,
        ..SessionState::default()
    };
    turn.say(turn.texts.memory.forget_me_done, None).await;
}
