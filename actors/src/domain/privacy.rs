//! Who a log line is about, without saying who: users appear in logs (and error reports) as
//! a keyed hash of their id, never the id itself, and message texts never appear at `info`
//! or above.
//!
//! The key is the process's (set once at start-up from a secret, see [`set_log_key`]), so
//! the same user has the same reference in every line of a deployment, which an operator
//! can compute for a user they are asked about (`vitte user-ref <id>`), while a leaked log
//! does not give the ids away: Telegram ids are few enough to guess by brute force an
//! unkeyed hash.

use std::sync::OnceLock;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::ports::UserId;

static LOG_KEY: OnceLock<Vec<u8>> = OnceLock::new();

/// The key used before [`set_log_key`] (tests, tools): references are still hashes.
const UNSET_KEY: &[u8] = b"vitte: no log key set";

/// Sets the key of user references for the process; later calls change nothing.
pub fn set_log_key(key: &[u8]) {
    let _ = LOG_KEY.set(key.to_vec());
}

/// The reference of `user_id` in logs: 12 hex digits of HMAC-SHA256 over the id.
pub fn user_ref(user_id: UserId) -> String {
    let key = LOG_KEY.get().map_or(UNSET_KEY, Vec::as_slice);
    // HMAC takes a key of any length: this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::from("user");
    };
    mac.update(b"user:");
    mac.update(user_id.to_string().as_bytes());
    let digest = mac.finalize().into_bytes();
    digest[..6]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_is_stable_short_and_not_the_id() {
        let reference = user_ref(123_456_789);
        assert_eq!(reference, user_ref(123_456_789));
        assert_ne!(reference, user_ref(123_456_780));
        assert_eq!(reference.len(), 12);
        assert!(!reference.contains("123456789"));
    }
}
