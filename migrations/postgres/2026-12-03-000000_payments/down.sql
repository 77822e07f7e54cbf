DROP INDEX messages_by_dialog_time;
DROP TABLE payment_events;
DROP TABLE checkouts;
DROP TABLE payments;
DROP TABLE entitlements;
