//! What vitte sells, as data (`config/catalogue.toml`): plans that open unlimited messages
//! for a number of days, and unlocks of a feature for good. Prices, durations and titles
//! change without code changes; a product can be taken off sale (it stays known, so what
//! users bought keeps its name, but it is no longer offered nor paid for).

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::domain::safety::Localized;
use crate::domain::texts::Lang;

/// The only subscription period Telegram allows (30 days, in seconds).
pub const SUBSCRIPTION_PERIOD_SECONDS: u32 = 2_592_000;
/// Telegram's limit on a Stars price (and on a subscription's).
pub const MAX_STARS: u32 = 10_000;

/// A feature a user unlocks for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// The per-slot intense mode of /settings.
    IntenseMode,
    /// The per-slot fantasy scenes of /settings.
    FantasyScenes,
}

impl Feature {
    pub const ALL: [Feature; 2] = [Feature::IntenseMode, Feature::FantasyScenes];

    pub fn as_str(self) -> &'static str {
        match self {
            Feature::IntenseMode => "intense_mode",
            Feature::FantasyScenes => "fantasy_scenes",
        }
    }

    pub fn parse(name: &str) -> Option<Feature> {
        Feature::ALL
            .into_iter()
            .find(|feature| feature.as_str() == name)
    }
}

/// What a product gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Unlimited messages (within the fair-use cap) for `days`; a subscription renews
    /// every 30 days through Telegram.
    Plan { days: u32, subscription: bool },
    /// A feature, for good.
    Unlock(Feature),
}

/// One product of the catalogue.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    /// Named in invoice payloads and stored with payments: never reuse one for another
    /// product.
    pub id: String,
    pub stars: u32,
    pub grant: Grant,
    pub title: Localized,
    pub description: Localized,
    pub on_sale: bool,
}

impl Product {
    pub fn title_in(&self, lang: Lang) -> &str {
        self.title.get(lang)
    }

    pub fn description_in(&self, lang: Lang) -> &str {
        self.description.get(lang)
    }

    /// Whether it is a plan that renews by itself (a Telegram Stars subscription).
    pub fn is_subscription(&self) -> bool {
        matches!(
            self.grant,
            Grant::Plan {
                subscription: true,
                ..
            }
        )
    }
}

/// The catalogue, validated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Catalogue {
    products: Vec<Product>,
}

/// A catalogue that cannot be used; the message names the file and the product.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("catalogue {file}: {reason}")]
pub struct CatalogueError {
    pub file: String,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    #[serde(default)]
    plans: Vec<PlanFile>,
    #[serde(default)]
    unlocks: Vec<UnlockFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    id: String,
    stars: u32,
    days: u32,
    #[serde(default)]
    subscription: bool,
    title: Localized,
    description: Localized,
    #[serde(default = "on_sale")]
    on_sale: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnlockFile {
    id: String,
    stars: u32,
    feature: String,
    title: Localized,
    description: Localized,
    #[serde(default = "on_sale")]
    on_sale: bool,
}

fn on_sale() -> bool {
    true
}

impl Catalogue {
    /// Parses and validates a catalogue file; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Catalogue, CatalogueError> {
        let invalid = |reason: String| CatalogueError {
            file: file.to_owned(),
            reason,
        };
        let raw: CatalogueFile =
            toml::from_str(text).map_err(|error| invalid(error.message().trim().to_owned()))?;
        let mut products = Vec::new();
        for plan in raw.plans {
            if plan.days == 0 {
                return Err(invalid(format!(
                    "plan {:?}: days must be at least 1",
                    plan.id
                )));
            }
            if plan.subscription
                && u64::from(plan.days) * 86_400 != u64::from(SUBSCRIPTION_PERIOD_SECONDS)
            {
                return Err(invalid(format!(
                    "plan {:?}: a subscription lasts 30 days (the only period Telegram allows)",
                    plan.id
                )));
            }
            products.push(Product {
                id: plan.id,
                stars: plan.stars,
                grant: Grant::Plan {
                    days: plan.days,
                    subscription: plan.subscription,
                },
                title: plan.title,
                description: plan.description,
                on_sale: plan.on_sale,
            });
        }
        for unlock in raw.unlocks {
            let Some(feature) = Feature::parse(&unlock.feature) else {
                return Err(invalid(format!(
                    "unlock {:?}: no feature {:?} (the features are intense_mode, fantasy_scenes)",
                    unlock.id, unlock.feature
                )));
            };
            products.push(Product {
                id: unlock.id,
                stars: unlock.stars,
                grant: Grant::Unlock(feature),
                title: unlock.title,
                description: unlock.description,
                on_sale: unlock.on_sale,
            });
        }
        let mut ids = BTreeSet::new();
        for product in &products {
            let id = &product.id;
            if !is_id(id) {
                return Err(invalid(format!(
                    "product {id:?}: an id is 1-24 characters of a-z, 0-9, _ and -"
                )));
            }
            if !ids.insert(id.clone()) {
                return Err(invalid(format!("product {id:?} is listed twice")));
            }
            if !(1..=MAX_STARS).contains(&product.stars) {
                return Err(invalid(format!(
                    "product {id:?}: stars must be 1 to {MAX_STARS}"
                )));
            }
            for (what, text, limit) in [
                ("title", &product.title, 32),
                ("description", &product.description, 255),
            ] {
                for value in [&text.en, &text.ru] {
                    let chars = value.trim().chars().count();
                    if chars == 0 || chars > limit {
                        return Err(invalid(format!(
                            "product {id:?}: {what} must be 1-{limit} characters (Telegram's limit)"
                        )));
                    }
                }
            }
        }
        let subscriptions = products.iter().filter(|p| p.is_subscription()).count();
        if subscriptions > 1 {
            return Err(invalid("at most one plan can be a subscription".to_owned()));
        }
        Ok(Catalogue { products })
    }

    /// Reads and parses a catalogue file.
    pub fn load(path: &std::path::Path) -> Result<Catalogue, CatalogueError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| CatalogueError {
            file: file.clone(),
            reason: error.to_string(),
        })?;
        Catalogue::parse(&file, &text)
    }

    /// Every product, on sale or not.
    pub fn all(&self) -> &[Product] {
        &self.products
    }

    pub fn get(&self, id: &str) -> Option<&Product> {
        self.products.iter().find(|product| product.id == id)
    }

    /// The products offered now, plans first.
    pub fn on_sale(&self) -> impl Iterator<Item = &Product> {
        self.products.iter().filter(|product| product.on_sale)
    }

    /// The unlock on sale for `feature`, if any.
    pub fn unlock_for(&self, feature: Feature) -> Option<&Product> {
        self.on_sale()
            .find(|product| product.grant == Grant::Unlock(feature))
    }
}

fn is_id(text: &str) -> bool {
    (1..=24).contains(&text.len())
        && text
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"_-".contains(&byte))
}

#[cfg(test)]
pub(crate) const TEST_CATALOGUE: &str = r#"
[[plans]]
id = "week"
stars = 150
days = 7
title = { en = "A week", ru = "Неделя" }
description = { en = "Unlimited messages for 7 days", ru = "Без ограничений 7 дней" }

[[plans]]
id = "month"
stars = 450
days = 30
subscription = true
title = { en = "A month", ru = "Месяц" }
description = { en = "Unlimited messages, renewed monthly", ru = "Без ограничений, каждый месяц" }

[[plans]]
id = "year"
stars = 2990
days = 365
title = { en = "A year", ru = "Год" }
description = { en = "Unlimited messages for a year", ru = "Без ограничений на год" }

[[unlocks]]
id = "intense_mode"
stars = 150
feature = "intense_mode"
title = { en = "Intense mode", ru = "Интенсивный режим" }
description = { en = "Darker, sharper stories", ru = "Более острые истории" }

[[unlocks]]
id = "fantasy_scenes"
stars = 200
feature = "fantasy_scenes"
title = { en = "Fantasy scenes", ru = "Фэнтези-сцены" }
description = { en = "Magic in every story", ru = "Магия в каждой истории" }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_shape_parses() {
        let catalogue = Catalogue::parse("catalogue.toml", TEST_CATALOGUE).expect("valid");
        assert_eq!(catalogue.all().len(), 5);
        let month = catalogue.get("month").expect("month");
        assert!(month.is_subscription());
        assert_eq!(month.stars, 450);
        assert_eq!(
            catalogue
                .unlock_for(Feature::FantasyScenes)
                .map(|p| p.stars),
            Some(200)
        );
    }

    #[test]
    fn mistakes_are_named_with_the_product() {
        let cases = [
            (
                TEST_CATALOGUE.replace("stars = 150\ndays = 7", "stars = 0\ndays = 7"),
                "stars must be 1",
            ),
            (
                TEST_CATALOGUE.replace("days = 30", "days = 31"),
                "a subscription lasts 30 days",
            ),
            (
                TEST_CATALOGUE.replace("feature = \"intense_mode\"", "feature = \"loud\""),
                "no feature \"loud\"",
            ),
            (
                TEST_CATALOGUE.replace("id = \"year\"", "id = \"week\""),
                "listed twice",
            ),
            (
                TEST_CATALOGUE.replace("id = \"year\"", "id = \"Year!\""),
                "an id is",
            ),
            (
                TEST_CATALOGUE.replace("A year", &"y".repeat(40)),
                "title must be 1-32",
            ),
            (
                TEST_CATALOGUE.replace("[[plans]]\nid = \"week\"", "[[plan]]\nid = \"week\""),
                "unknown field",
            ),
        ];
        for (text, expected) in cases {
            let error = Catalogue::parse("catalogue.toml", &text).expect_err(expected);
            assert!(
                error.to_string().starts_with("catalogue catalogue.toml: "),
                "{error}"
            );
            assert!(error.to_string().contains(expected), "{error} / {expected}");
        }
    }

    #[test]
    fn a_product_off_sale_stays_known_but_is_not_offered() {
        let text = TEST_CATALOGUE.replace(
            "stars = 2990\ndays = 365",
            "stars = 2990\ndays = 365\non_sale = false",
        );
        let catalogue = Catalogue::parse("catalogue.toml", &text).expect("valid");
        assert!(catalogue.get("year").is_some());
        assert!(catalogue.on_sale().all(|product| product.id != "year"));
    }
}
