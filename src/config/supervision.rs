//! The `[supervision.<kind>]` sections: each supervised kind's restart policy, as operators
//! write it, checked and turned into the actors' [`KindPolicy`].

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vitte_actors::resilience::backoff::BackoffSettings;
use vitte_actors::resilience::intensity::IntensitySettings;
use vitte_actors::supervision::{ActorKind, KindPolicy, OverflowPolicy};

use super::ConfigError;

/// Supervision policies: a `[supervision.<kind>]` section per kind of supervised component
/// (see `vitte_actors::supervision::kinds`). A kind without a section gets the defaults; a
/// section naming no kind is an error, so a typo never passes silently.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
// Transparent, not flattened: flattening buffers the values and loses the typing of
// environment variables (`VITTE__SUPERVISION__SESSION__MAILBOX_CAPACITY=3`).
#[serde(transparent)]
pub struct SupervisionSettings {
    sections: BTreeMap<String, KindSection>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KindSection {
    pub restart_intensity: IntensitySettings,
    pub backoff: BackoffSettings,
    pub mailbox_capacity: usize,
    pub overflow: OverflowPolicy,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for KindSection {
    fn default() -> Self {
        let policy = KindPolicy::default();
        KindSection {
            restart_intensity: policy.intensity,
            backoff: policy.backoff,
            mailbox_capacity: policy.mailbox_capacity,
            overflow: policy.overflow,
            idle_timeout: policy.idle_timeout,
            shutdown_timeout: policy.shutdown_timeout,
        }
    }
}

impl KindSection {
    pub fn policy(&self) -> KindPolicy {
        KindPolicy {
            intensity: self.restart_intensity.clone(),
            backoff: self.backoff.clone(),
            mailbox_capacity: self.mailbox_capacity,
            overflow: self.overflow,
            idle_timeout: self.idle_timeout,
            shutdown_timeout: self.shutdown_timeout,
        }
    }

    fn validate(&self, kind: &str) -> Result<(), ConfigError> {
        let key = |field: &str| format!("supervision.{kind}.{field}");
        self.restart_intensity
            .validate()
            .map_err(|problem| ConfigError::invalid(&key("restart_intensity"), problem))?;
        self.backoff
            .validate()
            .map_err(|problem| ConfigError::invalid(&key("backoff"), problem))?;
        if self.mailbox_capacity == 0 {
            return Err(ConfigError::invalid(
                &key("mailbox_capacity"),
                "must be at least 1",
            ));
        }
        if self.idle_timeout.is_zero() {
            return Err(ConfigError::invalid(
                &key("idle_timeout"),
                "must be longer than 0",
            ));
        }
        Ok(())
    }
}

impl SupervisionSettings {
    /// The section of `kind` (its defaults when the configuration has none).
    pub fn kind(&self, kind: ActorKind) -> KindSection {
        self.sections
            .get(kind.as_str())
            .cloned()
            .unwrap_or_default()
    }

    /// The section of `kind`, to change it (tests, tools).
    pub fn kind_mut(&mut self, kind: ActorKind) -> &mut KindSection {
        self.sections.entry(kind.as_str().to_owned()).or_default()
    }

    /// Every kind's policy.
    pub fn policies(&self) -> HashMap<ActorKind, KindPolicy> {
        ActorKind::ALL
            .iter()
            .map(|kind| (*kind, self.kind(*kind).policy()))
            .collect()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, section) in &self.sections {
            if ActorKind::parse(name).is_none() {
                return Err(ConfigError::invalid(
                    &format!("supervision.{name}"),
                    format!(
                        "no such kind of component (the kinds are {})",
                        ActorKind::names().join(", ")
                    ),
                ));
            }
            section.validate(name)?;
        }
        Ok(())
    }
}
