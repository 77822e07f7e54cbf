//! The user's say over proactive messages: the topics' switches, quiet hours and time zone
//! (/settings → Notifications, /timezone), and /report.

use crate::domain::entitlement::parse_zone;
use crate::domain::notification::{NotificationSettings, QuietHours, Topic};
use crate::domain::texts::fill;
use crate::ports::Keyboard;
use crate::session::buttons::ButtonData;
use crate::session::keyboards::button;
use crate::session::turn::Turn;

/// Quiet hours the button steps through, in order (equal hours: none).
const QUIET_PRESETS: [(u8, u8); 4] = [(23, 8), (22, 7), (0, 9), (0, 0)];

async fn load(turn: &Turn<'_>) -> Option<NotificationSettings> {
    let store = &turn.deps.notifications.store;
    match store.audience(turn.sender.user_id).await {
        Ok(audience) => Some(
            audience
                .map(|audience| audience.settings)
                .unwrap_or_default(),
        ),
        Err(error) => {
            turn.storage_failed(&error, "notification settings").await;
            None
        }
    }
}

async fn save(turn: &Turn<'_>, settings: &NotificationSettings) -> bool {
    let store = &turn.deps.notifications.store;
    match store
        .save_notification_settings(turn.sender.user_id, settings)
        .await
    {
        Ok(()) => true,
        Err(error) => {
            turn.storage_failed(&error, "notification settings").await;
            false
        }
    }
}

/// The notification settings with their switches; shown anew, or in place of the message
/// whose button was pressed.
pub(super) async fn show(turn: &Turn<'_>, edit: Option<i64>) {
    let Some(settings) = load(turn).await else {
        return;
    };
    render(turn, &settings, edit).await;
}

async fn render(turn: &Turn<'_>, settings: &NotificationSettings, edit: Option<i64>) {
    let texts = turn.texts.notifications;
    let defaults = &turn.deps.notifications.settings;
    let quiet = settings.quiet_hours(defaults.default_quiet);
    let quiet_text = if quiet.start == quiet.end {
        texts.quiet_none.to_owned()
    } else {
        quiet.describe()
    };
    let zone = settings.zone(defaults.default_zone).name().to_owned();
    let title = fill(
        texts.settings_title,
        &[("quiet", &quiet_text), ("zone", &zone)],
    );
    let mut rows: Vec<_> = Topic::ALL
        .iter()
        .zip(texts.topics)
        .map(|(topic, label)| {
            let shown = if settings.disabled.contains(topic) {
                turn.texts.off
            } else {
                turn.texts.on
            };
            vec![button(
                &format!("{label}: {shown}"),
                ButtonData::NotifyTopic(*topic),
            )]
        })
        .collect();
    let current = QUIET_PRESETS
        .iter()
        .position(|(start, end)| *start == quiet.start && *end == quiet.end);
    let (start, end) = QUIET_PRESETS[current.map_or(0, |index| (index + 1) % QUIET_PRESETS.len())];
    rows.push(vec![button(
        &fill(texts.quiet_label, &[("quiet", &quiet_text)]),
        ButtonData::QuietHours { start, end },
    )]);
    rows.push(vec![button(
        &fill(texts.zone_label, &[("zone", &zone)]),
        ButtonData::TimeZoneHelp,
    )]);
    let keyboard = Keyboard { rows };
    turn.show(&title, &keyboard, edit).await;
}

/// Switches a topic on or off.
pub(super) async fn toggle_topic(turn: &Turn<'_>, topic: Topic, message_id: Option<i64>) {
    let Some(mut settings) = load(turn).await else {
        return;
    };
    if !settings.disabled.remove(&topic) {
        settings.disabled.insert(topic);
    }
    if save(turn, &settings).await {
        render(turn, &settings, message_id).await;
    }
}

/// Sets quiet hours.
pub(super) async fn set_quiet_hours(turn: &Turn<'_>, start: u8, end: u8, message_id: Option<i64>) {
    let Some(mut settings) = load(turn).await else {
        return;
    };
    settings.quiet = Some(QuietHours { start, end });
    if save(turn, &settings).await {
        render(turn, &settings, message_id).await;
    }
}

/// /timezone Area/City: the zone of quiet hours and recaps.
pub(super) async fn set_time_zone(turn: &Turn<'_>, name: &str) {
    let texts = turn.texts.notifications;
    let Some(zone) = parse_zone(name) else {
        turn.say(texts.zone_usage, None).await;
        return;
    };
    let Some(mut settings) = load(turn).await else {
        return;
    };
    settings.time_zone = Some(zone.name().to_owned());
    if save(turn, &settings).await {
        turn.deps
            .notifications
            .notifier
            .zone_changed(turn.sender.user_id);
        turn.say(&fill(texts.zone_set, &[("zone", zone.name())]), None)
            .await;
    }
}

/// How to set the time zone.
pub(super) async fn explain_time_zone(turn: &Turn<'_>) {
    turn.say(turn.texts.notifications.zone_usage, None).await;
}

/// /report: written by the scheduler (the LLM takes a while); the session goes on.
pub(super) async fn report(turn: &Turn<'_>) {
    turn.say(turn.texts.notifications.report_writing, None)
        .await;
    turn.deps
        .notifications
        .notifier
        .report_now(turn.sender.user_id, turn.chat(), turn.lang);
}
