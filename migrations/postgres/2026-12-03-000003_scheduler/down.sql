DROP TABLE broadcast_deliveries;
DROP TABLE broadcasts;
ALTER TABLE users DROP COLUMN blocked_at;
DROP TABLE notification_settings;
DROP TABLE scheduled_jobs;
