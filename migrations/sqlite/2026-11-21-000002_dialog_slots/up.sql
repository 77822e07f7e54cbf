-- Three dialog slots: what the user chose (language, age confirmation), and per dialog its
-- feature flags and how many persona messages it has (for the "Continue" button's cadence).
ALTER TABLE users ADD COLUMN language TEXT;
ALTER TABLE users ADD COLUMN adult_confirmed_at BIGINT;
ALTER TABLE dialogs ADD COLUMN intense_mode BOOLEAN NOT NULL DEFAULT 0;
ALTER TABLE dialogs ADD COLUMN fantasy_scenes BOOLEAN NOT NULL DEFAULT 0;
ALTER TABLE dialogs ADD COLUMN persona_messages INTEGER NOT NULL DEFAULT 0;
