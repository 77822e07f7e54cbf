//! The kinds of supervised components: the one place a new kind is declared.
//!
//! Adding a kind is one line in [`actor_kinds!`] below plus its `[supervision.<name>]`
//! section in `config/default.toml`; its policy, metrics labels, `/admin/actors` row and
//! configuration key follow from the declaration.

/// How a kind runs, which decides what its figures mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Actors with mailboxes, one per key (a user, a payment): `live` counts actors and
    /// `mailbox_depth` the messages waiting in their mailboxes.
    Mailbox,
    /// A shared service called directly (no mailbox), with state per backend (the LLM
    /// gateway's per-provider breakers): it has no live actors; its "mailbox" is the queue of
    /// calls waiting for a rate limit.
    Service,
}

macro_rules! actor_kinds {
    ($($(#[$doc:meta])* $variant:ident = $name:literal, $shape:ident;)+) => {
        /// The kinds of supervised components.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ActorKind {
            $($(#[$doc])* $variant,)+
        }

        impl ActorKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [ActorKind] = &[$(ActorKind::$variant,)+];

            /// The kind's name: its configuration section and its metrics label.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ActorKind::$variant => $name,)+
                }
            }

            /// How the kind runs.
            pub fn shape(self) -> Shape {
                match self {
                    $(ActorKind::$variant => Shape::$shape,)+
                }
            }
        }
    };
}

actor_kinds! {
    /// One session actor per Telegram user (`session/`).
    Session = "session", Mailbox;
    /// The LLM gateway (`gateway/`): a service with per-provider state, not a mailbox actor.
    Llm = "llm", Service;
    /// The payment desk (`payments/`): one mailbox actor for every purchase and refund.
    Payments = "payments", Mailbox;
    /// The memory keeper (`memory/`): one actor with its own bounded queue of extraction
    /// and summary jobs.
    Memory = "memory", Mailbox;
    /// The outbox (`outbox/`): one actor through which every message to Telegram goes,
    /// queued by priority and paced by Telegram's limits.
    Outbox = "outbox", Mailbox;
    /// The scheduler (`scheduler/`): one actor running persistent jobs (notifications,
    /// reports, broadcasts) when they are due.
    Scheduler = "scheduler", Mailbox;
}

impl ActorKind {
    /// The kind called `name`, if there is one.
    pub fn parse(name: &str) -> Option<ActorKind> {
        ActorKind::ALL
            .iter()
            .copied()
            .find(|kind| kind.as_str() == name)
    }

    /// The names of every kind, for error messages.
    pub fn names() -> Vec<&'static str> {
        ActorKind::ALL.iter().map(|kind| kind.as_str()).collect()
    }
}

impl std::fmt::Display for ActorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_back_from_its_name() {
        for kind in ActorKind::ALL {
            assert_eq!(ActorKind::parse(kind.as_str()), Some(*kind));
        }
        assert_eq!(ActorKind::parse("mailman"), None, "no actor, no kind");
        assert_eq!(ActorKind::Llm.shape(), Shape::Service);
    }
}
