DROP TABLE processed_updates;
DROP TABLE messages;
DROP TABLE dialogs;
DROP TABLE users;
