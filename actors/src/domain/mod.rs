//! Domain logic that several actors share, with no actor in it: what reaches a session
//! ([`event`]), the personas and their stories ([`persona`]), building prompts within a token
//! budget ([`prompt`]), the safety rules ([`safety`]), what vitte sells ([`catalogue`]) and
//! what a user may do ([`entitlement`]), long-term memory's facts and scores ([`memory`]),
//! and everything a user reads, in Russian and English ([`texts`], [`shop_texts`],
//! [`memory_texts`]).

pub mod catalogue;
pub mod entitlement;
pub mod event;
pub mod memory;
pub mod memory_texts;
pub mod notification;
pub mod notification_texts;
pub mod persona;
pub mod privacy;
pub mod prompt;
pub mod safety;
pub mod shop_texts;
pub mod texts;

#[cfg(test)]
mod fuzz;
