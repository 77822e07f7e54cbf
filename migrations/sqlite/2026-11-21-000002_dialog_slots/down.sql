ALTER TABLE dialogs DROP COLUMN persona_messages;
ALTER TABLE dialogs DROP COLUMN fantasy_scenes;
ALTER TABLE dialogs DROP COLUMN intense_mode;
ALTER TABLE users DROP COLUMN adult_confirmed_at;
ALTER TABLE users DROP COLUMN language;
