//! The outbox's [`BlockedListener`]: a user who blocked the bot (or deleted their account)
//! is marked inactive, which pauses their scheduled jobs until they write again.

use vitte_actors::outbox::BlockedListener;
use vitte_actors::ports::ChatId;
use vitte_actors::ports::schedule::JobStore;

use super::Database;

impl BlockedListener for Database {
    /// A private chat's id is its user's. Recorded on the storage runtime: the outbox never
    /// waits for the database.
    fn blocked(&self, chat: ChatId) {
        if chat <= 0 {
            return;
        }
        let database = self.clone();
        let now = self.now();
        let Some(runtime) = self.runtime.0.as_ref() else {
            return;
        };
        runtime.spawn(async move {
            if let Err(error) = database.set_active(chat, false, now).await {
                tracing::warn!(%error, "could not mark a user who blocked the bot inactive");
            }
        });
    }
}
