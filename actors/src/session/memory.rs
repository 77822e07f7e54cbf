//! What a session does for long-term memory: recall before a reply, and the keeper's jobs
//! it asks for (extraction after enough new messages or when the dialog goes idle; a
//! summary when the history outgrew the prompt). None of it makes a reply wait on the
//! keeper: jobs are queued, recall has its deadline.

use crate::memory::messages::{ExtractJob, SummariseJob};
use crate::memory::recall::recall;
use crate::ports::{HistoryEntry, Role, UserId};
use crate::session::state::{Dialog, SessionDeps, SessionState};

/// Recalls what the active dialog's persona remembers that bears on the user's last message
/// and leaves it in the dialog for the reply about to be written.
pub(crate) async fn recall_for_reply(
    deps: &SessionDeps,
    state: &mut SessionState,
    user_id: UserId,
) {
    let Some(dialog) = state.active() else {
        return;
    };
    dialog.recalled.clear();
    let query = dialog
        .history
        .iter()
        .rev()
        .find(|entry| entry.role == Role::User)
        .map(|entry| entry.content.clone());
    let Some(query) = query else {
        return;
    };
    let persona_id = dialog.persona.id.clone();
    let counter = deps.prompts.counter();
    let recalled = recall(
        &deps.memory,
        &deps.metrics,
        &mut state.memories,
        user_id,
        &persona_id,
        &query,
        |text| counter.count(text),
    )
    .await;
    if let Some(dialog) = state.active() {
        dialog.recalled = recalled;
    }
}

/// Most messages sent in one extraction.
const MAX_EXTRACT_MESSAGES: usize = 40;

/// Messages of the dialog not yet looked at for facts.
fn unextracted(dialog: &Dialog) -> Vec<&HistoryEntry> {
    dialog
        .history
        .iter()
        .filter(|entry| entry.message_id > dialog.extracted_through)
        .collect()
}

/// Asks the keeper for facts from the dialog's new messages when there are more than
/// `more_than` of them (at least one user message among them).
pub(crate) fn extract_if_due(
    deps: &SessionDeps,
    dialog: &mut Dialog,
    user_id: UserId,
    user_name: &str,
    more_than: usize,
) {
    if !deps.memory.settings.enabled {
        return;
    }
    let mut fresh = unextracted(dialog);
    if fresh.len() <= more_than || !fresh.iter().any(|entry| entry.role == Role::User) {
        return;
    }
    // A long stretch (a keeper that was down, a long idle dialog): its newest part only.
    let skipped = fresh.len().saturating_sub(MAX_EXTRACT_MESSAGES);
    fresh.drain(..skipped);
    let Some(through) = fresh.last().map(|entry| entry.message_id) else {
        return;
    };
    let messages = fresh
        .iter()
        .map(|entry| (entry.role, entry.content.clone()))
        .collect();
    deps.memory.keeper.extract(ExtractJob {
        user_id,
        dialog_id: dialog.id,
        persona_id: dialog.persona.id.clone(),
        persona_name: dialog.persona.name.clone(),
        user_name: user_name.to_owned(),
        messages,
        through_message_id: through,
    });
    dialog.extracted_through = through;
}

/// The dialog goes idle: whatever is new in any slot goes to the keeper.
pub(crate) fn extract_on_idle(deps: &SessionDeps, state: &mut SessionState, user_id: UserId) {
    let user_name = state
        .profile
        .as_ref()
        .map(|profile| profile.first_name.clone())
        .unwrap_or_default();
    for dialog in state.slots.iter_mut().flatten() {
        extract_if_due(deps, dialog, user_id, &user_name, 0);
    }
}

/// Most recent messages never folded into a summary: the story's present stays verbatim.
const KEPT_VERBATIM: usize = 4;

/// `left_out` of the history after the summary did not fit the prompt: asks the keeper to
/// fold them (and `summary_chunk` more, so that this is not asked at every message) into
/// the dialog's summary, once per stretch.
pub(crate) fn summarise_if_due(
    deps: &SessionDeps,
    dialog: &mut Dialog,
    user_id: UserId,
    user_name: &str,
    left_out: usize,
) {
    if left_out == 0 || !deps.memory.settings.enabled {
        return;
    }
    let after_summary: Vec<&HistoryEntry> = dialog
        .history
        .iter()
        .filter(|entry| {
            dialog
                .summary
                .as_ref()
                .is_none_or(|summary| entry.message_id > summary.through_message_id)
        })
        .collect();
    let fold = (left_out + deps.memory.settings.summary_chunk)
        .min(after_summary.len().saturating_sub(KEPT_VERBATIM));
    let Some(through) = fold
        .checked_sub(1)
        .and_then(|last| after_summary.get(last))
        .map(|entry| entry.message_id)
    else {
        return;
    };
    if through <= dialog.summary_asked_through {
        return;
    }
    let messages = after_summary[..fold]
        .iter()
        .map(|entry| (entry.role, entry.content.clone()))
        .collect();
    deps.memory.keeper.summarise(SummariseJob {
        user_id,
        dialog_id: dialog.id,
        persona_name: dialog.persona.name.clone(),
        user_name: user_name.to_owned(),
        previous: dialog.summary.as_ref().map(|summary| summary.text.clone()),
        messages,
        through_message_id: through,
    });
    dialog.summary_asked_through = through;
}
