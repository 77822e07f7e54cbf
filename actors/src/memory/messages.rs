//! What the memory keeper is sent.

use std::sync::Arc;

use actix::prelude::*;

use crate::ports::memory::MemoryId;
use crate::ports::{DialogId, Role, UserId};

use super::MemoryListener;

/// New messages of a dialog to extract durable facts about the user from.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtractJob {
    pub user_id: UserId,
    pub dialog_id: DialogId,
    pub persona_id: String,
    pub persona_name: String,
    pub user_name: String,
    /// Oldest first.
    pub messages: Vec<(Role, String)>,
    /// The newest of them: the dialog's extraction cursor moves here when done.
    pub through_message_id: i64,
}

/// A dialog's earlier part to fold into its summary.
#[derive(Debug, Clone, PartialEq)]
pub struct SummariseJob {
    pub user_id: UserId,
    pub dialog_id: DialogId,
    pub persona_name: String,
    pub user_name: String,
    /// The summary so far, if any (the new one continues it).
    pub previous: Option<String>,
    /// The messages after the previous summary, oldest first.
    pub messages: Vec<(Role, String)>,
    /// The newest of them: the summary covers the dialog up to here.
    pub through_message_id: i64,
}

/// Queues an extraction (the oldest job is dropped, and counted, when the queue is full).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Extract(pub ExtractJob);

/// Queues a summary (the oldest job is dropped, and counted, when the queue is full).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Summarise(pub SummariseJob);

/// Forgets some of a user's memories (`Some(ids)`) or everything of the user (`None`):
/// done before any queued job, after the one in progress; the user's queued jobs are
/// dropped when everything goes. Answers how many memories went (0 for everything).
#[derive(Message, Debug)]
#[rtype(result = "Result<u64, ForgetError>")]
pub struct Forget {
    pub user_id: UserId,
    pub ids: Option<Vec<MemoryId>>,
}

/// Why forgetting did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgetError {
    #[error("storage refused: {0}")]
    Storage(String),
    #[error("the memory keeper crashed")]
    Crashed,
    #[error("the memory keeper is not running")]
    Gone,
}

/// Whom the keeper tells about changed memories.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Listen(pub Arc<dyn MemoryListener>);
