DROP INDEX dialogs_by_user;
