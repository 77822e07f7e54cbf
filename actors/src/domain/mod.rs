//! Domain logic that several actors share, with no actor in it: what reaches a session
//! ([`event`]), the personas and their stories ([`persona`]), building prompts within a token
//! budget ([`prompt`]), the safety rules ([`safety`]) and everything a user reads, in Russian
//! and English ([`texts`]).

pub mod event;
pub mod persona;
pub mod prompt;
pub mod safety;
pub mod texts;

#[cfg(test)]
mod fuzz;
