//! What an inline button says when pressed: the session's button wire protocol, encoded and
//! decoded in this one place.
//!
//! Telegram gives a button at most 64 bytes of `callback_data`. Persona ids have at most 24
//! characters, story ids 20, and dialog ids are written in base 36 (at most 13), so the longest
//! encoding, [`ButtonData::ReplaceSlot`], takes 63. A question's answer names the dialog it
//! was about, so an old button can never act on a dialog opened since: it answers
//! "Cancelled." instead. Anything that does not decode (garbage, a format of an older
//! version, a forged button) is [`ButtonData::Unknown`], answered "Cancelled." as well.
//!
//! | data | meaning |
//! | --- | --- |
//! | `g` | the persona gallery |
//! | `p:{persona}` | a persona's card and stories |
//! | `s:{persona}:{story}` | start a story (in a free slot, or ask which to replace) |
//! | `a:{persona}:{story}` | the user confirmed being 18+, then start |
//! | `r:{slot}:{dialog}:{persona}:{story}` | start a story in `slot`, replacing `dialog` |
//! | `c:{slot}` / `k:{slot}` | continue / ask to clear a slot |
//! | `k!:{slot}:{dialog}` | clear the slot, if it still holds that dialog |
//! | `reset!:{dialog}` | clear all slots (after /reset asked; `dialog`: the newest then) |
//! | `d`, `m`, `st`, `l` | dialogs, menu, settings, language |
//! | `t:intense` / `t:fantasy` | toggle a mode of the active slot |
//! | `l:{ru,en}` | choose the language |
//! | `regen`, `more`, `retry` | regenerate the last reply, continue the story, retry |
//! | `x` | cancel a question |
//! | `$`, `$:{product}`, `me` | the store, buy a product, the user's plan (/status) |
//! | `renew:{on,off}` | resume or cancel the subscription's renewal |
//! | `mem:{page}`, `mem-:{memory}:{page}`, `mem!:{persona}` | /memory's pages, forget one, forget all the persona recalls |
//! | `forgetme!` | /forget_me confirmed |

use crate::domain::notification::Topic;
use crate::domain::texts::Lang;
use crate::ports::DialogId;
use crate::ports::memory::MemoryId;

/// Telegram's limit on a button's data, in bytes.
pub const MAX_BUTTON_DATA_BYTES: usize = 64;

/// A per-slot mode the user toggles in /settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Intense,
    Fantasy,
}

/// What a pressed button asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ButtonData {
    Gallery,
    Persona {
        persona: String,
    },
    Story {
        persona: String,
        story: String,
    },
    /// The user confirmed being 18 or older, then starts the story.
    AdultConfirmed {
        persona: String,
        story: String,
    },
    /// Start a story in `slot`, replacing `dialog` (if the slot still holds it).
    ReplaceSlot {
        slot: u8,
        dialog: DialogId,
        persona: String,
        story: String,
    },
    ContinueSlot {
        slot: u8,
    },
    AskClear {
        slot: u8,
    },
    /// Clear `slot`, if it still holds `dialog`.
    Clear {
        slot: u8,
        dialog: DialogId,
    },
    /// Clear every slot, if `newest` is still the newest open dialog (0: none was open).
    ResetAll {
        newest: DialogId,
    },
    Dialogs,
    Menu,
    Settings,
    LanguageMenu,
    Toggle(Mode),
    Language(Lang),
    Regenerate,
    ContinueStory,
    Retry,
    /// Show again the stored reply `message` (one a restart may have kept from arriving).
    ShowReply {
        message: i64,
    },
    Cancel,
    /// The store (/store).
    Store,
    /// Buy a catalogue product (its id: at most 24 characters).
    Buy {
        product: String,
    },
    /// The user's plan and usage (/status).
    Status,
    /// Resume (`true`) or cancel the subscription's renewal.
    Renewal {
        renewing: bool,
    },
    /// A page of /memory (from 0).
    MemoryPage {
        page: u16,
    },
    /// Forget one memory, then show `page` of /memory again.
    ForgetMemory {
        memory: MemoryId,
        page: u16,
    },
    /// Forget everything the active dialog's persona (`persona`, the one /memory listed)
    /// remembers.
    ForgetAllMemories {
        persona: String,
    },
    /// /forget_me confirmed.
    ForgetMe,
    /// The notification settings.
    Notifications,
    /// Switch a notification topic on or off.
    NotifyTopic(Topic),
    /// Set quiet hours to `start`–`end` (equal: none).
    QuietHours {
        start: u8,
        end: u8,
    },
    /// How to set the time zone.
    TimeZoneHelp,
    /// Data this version does not understand.
    Unknown,
}

impl ButtonData {
    /// The `callback_data` of the button.
    pub fn encode(&self) -> String {
        match self {
            ButtonData::Gallery => "g".into(),
            ButtonData::Persona { persona } => format!("p:{persona}"),
            ButtonData::Story { persona, story } => format!("s:{persona}:{story}"),
            ButtonData::AdultConfirmed { persona, story } => format!("a:{persona}:{story}"),
            ButtonData::ReplaceSlot {
                slot,
                dialog,
                persona,
                story,
            } => format!("r:{slot}:{}:{persona}:{story}", short_id(*dialog)),
            ButtonData::ContinueSlot { slot } => format!("c:{slot}"),
            ButtonData::AskClear { slot } => format!("k:{slot}"),
            ButtonData::Clear { slot, dialog } => format!("k!:{slot}:{}", short_id(*dialog)),
            ButtonData::ResetAll { newest } => format!("reset!:{}", short_id(*newest)),
            ButtonData::Dialogs => "d".into(),
            ButtonData::Menu => "m".into(),
            ButtonData::Settings => "st".into(),
            ButtonData::LanguageMenu => "l".into(),
            ButtonData::Toggle(Mode::Intense) => "t:intense".into(),
            ButtonData::Toggle(Mode::Fantasy) => "t:fantasy".into(),
            ButtonData::Language(lang) => format!("l:{}", lang.code()),
            ButtonData::Regenerate => "regen".into(),
            ButtonData::ContinueStory => "more".into(),
            ButtonData::Retry => "retry".into(),
            ButtonData::ShowReply { message } => format!("show:{message}"),
            ButtonData::Cancel => "x".into(),
            ButtonData::Store => "$".into(),
            ButtonData::Buy { product } => format!("$:{product}"),
            ButtonData::Status => "me".into(),
            ButtonData::Renewal { renewing: true } => "renew:on".into(),
            ButtonData::Renewal { renewing: false } => "renew:off".into(),
            ButtonData::MemoryPage { page } => format!("mem:{page}"),
            ButtonData::ForgetMemory { memory, page } => {
                format!("mem-:{}:{page}", short_id(*memory))
            }
            ButtonData::ForgetAllMemories { persona } => format!("mem!:{persona}"),
            ButtonData::ForgetMe => "forgetme!".into(),
            ButtonData::Notifications => "n".into(),
            ButtonData::NotifyTopic(topic) => format!("n:{}", topic.as_str()),
            ButtonData::QuietHours { start, end } => format!("nq:{start}:{end}"),
            ButtonData::TimeZoneHelp => "nz".into(),
            // Never sent; pressing it would answer "Cancelled." like any unknown data.
            ButtonData::Unknown => "?".into(),
        }
    }

    /// What `data` asks for; [`ButtonData::Unknown`] for anything that is not one of ours.
    pub fn decode(data: &str) -> ButtonData {
        ButtonData::parse(data).unwrap_or(ButtonData::Unknown)
    }

    fn parse(data: &str) -> Option<ButtonData> {
        if data.len() > MAX_BUTTON_DATA_BYTES {
            return None;
        }
        let mut parts = data.split(':');
        let head = parts.next()?;
        let args: Vec<&str> = parts.collect();
        let id = |text: &&str| is_id(text).then(|| (*text).to_owned());
        let data = match (head, args.as_slice()) {
            ("g", []) => ButtonData::Gallery,
            ("p", [persona]) => ButtonData::Persona {
                persona: id(persona)?,
            },
            ("s", [persona, story]) => ButtonData::Story {
                persona: id(persona)?,
                story: id(story)?,
            },
            ("a", [persona, story]) => ButtonData::AdultConfirmed {
                persona: id(persona)?,
                story: id(story)?,
            },
            ("r", [slot, dialog, persona, story]) => ButtonData::ReplaceSlot {
                slot: parse_slot(slot)?,
                dialog: parse_short_id(dialog)?,
                persona: id(persona)?,
                story: id(story)?,
            },
            ("c", [slot]) => ButtonData::ContinueSlot {
                slot: parse_slot(slot)?,
            },
            ("k", [slot]) => ButtonData::AskClear {
                slot: parse_slot(slot)?,
            },
            ("k!", [slot, dialog]) => ButtonData::Clear {
                slot: parse_slot(slot)?,
                dialog: parse_short_id(dialog)?,
            },
            ("reset!", [newest]) => ButtonData::ResetAll {
                newest: parse_short_id(newest)?,
            },
            ("d", []) => ButtonData::Dialogs,
            ("m", []) => ButtonData::Menu,
            ("st", []) => ButtonData::Settings,
            ("l", []) => ButtonData::LanguageMenu,
            ("t", ["intense"]) => ButtonData::Toggle(Mode::Intense),
            ("t", ["fantasy"]) => ButtonData::Toggle(Mode::Fantasy),
            ("l", [code]) => ButtonData::Language(Lang::parse(code)?),
            ("regen", []) => ButtonData::Regenerate,
            ("more", []) => ButtonData::ContinueStory,
            ("retry", []) => ButtonData::Retry,
            ("show", [message]) => ButtonData::ShowReply {
                message: message.parse().ok()?,
            },
            ("x", []) => ButtonData::Cancel,
            ("$", []) => ButtonData::Store,
            ("$", [product]) if product.len() <= 24 => ButtonData::Buy {
                product: id(product)?,
            },
            ("me", []) => ButtonData::Status,
            ("renew", ["on"]) => ButtonData::Renewal { renewing: true },
            ("renew", ["off"]) => ButtonData::Renewal { renewing: false },
            ("mem", [page]) => ButtonData::MemoryPage {
                page: page.parse().ok()?,
            },
            ("mem-", [memory, page]) => ButtonData::ForgetMemory {
                memory: parse_short_id(memory)?,
                page: page.parse().ok()?,
            },
            ("mem!", [persona]) => ButtonData::ForgetAllMemories {
                persona: id(persona)?,
            },
            ("forgetme!", []) => ButtonData::ForgetMe,
            ("n", []) => ButtonData::Notifications,
            ("n", [topic]) => ButtonData::NotifyTopic(Topic::parse(topic)?),
            ("nq", [start, end]) => ButtonData::QuietHours {
                start: start.parse().ok().filter(|hour| *hour < 24)?,
                end: end.parse().ok().filter(|hour| *hour < 24)?,
            },
            ("nz", []) => ButtonData::TimeZoneHelp,
            _ => return None,
        };
        Some(data)
    }
}

/// A slot number as a button writes it: 1 to 3.
fn parse_slot(text: &str) -> Option<u8> {
    text.parse::<u8>()
        .ok()
        .filter(|slot| (1..=super::state::SLOT_COUNT).contains(slot))
}

/// A persona or story id as persona files allow them: lowercase letters, digits, `_`, `-`.
fn is_id(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"_-".contains(&byte))
}

/// A dialog id in base 36.
fn short_id(id: DialogId) -> String {
    let mut digits = Vec::new();
    let mut rest = id.unsigned_abs();
    loop {
        let digit = u32::try_from(rest % 36).unwrap_or(0);
        digits.push(char::from_digit(digit, 36).unwrap_or('0'));
        rest /= 36;
        if rest == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
}

fn parse_short_id(text: &str) -> Option<DialogId> {
    let id = i64::from_str_radix(text, 36).ok()?;
    (id >= 0 && !text.starts_with(['+', '-'])).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn longest_id(chars: usize) -> String {
        "z".repeat(chars)
    }

    /// One of each variant, with the longest ids and numbers they can carry.
    fn every_variant() -> Vec<ButtonData> {
        let persona = longest_id(crate::domain::persona::MAX_ID_CHARS);
        let story = longest_id(crate::domain::persona::MAX_STORY_ID_CHARS);
        vec![
            ButtonData::Gallery,
            ButtonData::Persona {
                persona: persona.clone(),
            },
            ButtonData::Story {
                persona: persona.clone(),
                story: story.clone(),
            },
            ButtonData::AdultConfirmed {
                persona: persona.clone(),
                story: story.clone(),
            },
            ButtonData::ReplaceSlot {
                slot: 3,
                dialog: i64::MAX,
                persona,
                story,
            },
            ButtonData::ContinueSlot { slot: 1 },
            ButtonData::AskClear { slot: 2 },
            ButtonData::Clear {
                slot: 3,
                dialog: i64::MAX,
            },
            ButtonData::ResetAll { newest: 0 },
            ButtonData::ResetAll { newest: i64::MAX },
            ButtonData::Dialogs,
            ButtonData::Menu,
            ButtonData::Settings,
            ButtonData::LanguageMenu,
            ButtonData::Toggle(Mode::Intense),
            ButtonData::Toggle(Mode::Fantasy),
            ButtonData::Language(Lang::Ru),
            ButtonData::Language(Lang::En),
            ButtonData::Regenerate,
            ButtonData::ContinueStory,
            ButtonData::Retry,
            ButtonData::Cancel,
            ButtonData::Store,
            ButtonData::Buy {
                product: longest_id(24),
            },
            ButtonData::Status,
            ButtonData::Renewal { renewing: true },
            ButtonData::Renewal { renewing: false },
            ButtonData::MemoryPage { page: u16::MAX },
            ButtonData::ForgetMemory {
                memory: i64::MAX,
                page: u16::MAX,
            },
            ButtonData::ForgetAllMemories {
                persona: longest_id(crate::domain::persona::MAX_ID_CHARS),
            },
            ButtonData::ForgetMe,
            ButtonData::Notifications,
            ButtonData::NotifyTopic(Topic::Announcements),
            ButtonData::QuietHours { start: 23, end: 8 },
            ButtonData::TimeZoneHelp,
        ]
    }

    #[test]
    fn every_variant_round_trips() {
        for data in every_variant() {
            assert_eq!(
                ButtonData::decode(&data.encode()),
                data,
                "{}",
                data.encode()
            );
        }
    }

    #[test]
    fn every_encoding_fits_telegrams_64_bytes() {
        for data in every_variant() {
            let encoded = data.encode();
            assert!(
                encoded.len() <= MAX_BUTTON_DATA_BYTES,
                "{encoded}: {}",
                encoded.len()
            );
        }
    }

    #[test]
    fn the_wire_format_is_stable() {
        // Buttons already in users' chats keep working after an upgrade.
        let cases = [
            ("g", ButtonData::Gallery),
            ("c:2", ButtonData::ContinueSlot { slot: 2 }),
            (
                "k!:1:a",
                ButtonData::Clear {
                    slot: 1,
                    dialog: 10,
                },
            ),
            (
                "r:3:zz:mira:lighthouse",
                ButtonData::ReplaceSlot {
                    slot: 3,
                    dialog: 36 * 36 - 1,
                    persona: "mira".into(),
                    story: "lighthouse".into(),
                },
            ),
            ("reset!:0", ButtonData::ResetAll { newest: 0 }),
            ("t:intense", ButtonData::Toggle(Mode::Intense)),
            ("l:ru", ButtonData::Language(Lang::Ru)),
            ("regen", ButtonData::Regenerate),
            ("show:4242", ButtonData::ShowReply { message: 4242 }),
        ];
        for (data, expected) in cases {
            assert_eq!(ButtonData::decode(data), expected, "{data}");
            assert_eq!(expected.encode(), data);
        }
    }

    #[test]
    fn garbage_and_old_formats_are_unknown() {
        let long = "p:".to_owned() + &"a".repeat(100);
        for data in [
            "",
            ":",
            "pick:mira",
            "p:",
            "p:Mira",
            "p:mira:extra",
            "s:mira",
            "c:0",
            "c:4",
            "c:-1",
            "c:x",
            "k!:1",
            "k!:1:-5",
            "k!:1:+5",
            "k!:1:zzzzzzzzzzzzzzzzzzzz",
            "t:loud",
            "l:de",
            "reset!",
            "regen:now",
            "persona_mira",
            "💥",
            long.as_str(),
        ] {
            assert_eq!(ButtonData::decode(data), ButtonData::Unknown, "{data:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]

    #[test]
    fn any_button_data_decodes_and_what_decodes_encodes_back(data in ".{0,80}") {
        let decoded = ButtonData::decode(&data);
        if decoded != ButtonData::Unknown {
            proptest::prop_assert_eq!(ButtonData::decode(&decoded.encode()), decoded);
        }
    }
    }
}
