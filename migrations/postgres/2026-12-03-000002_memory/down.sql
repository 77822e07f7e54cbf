DROP TABLE forgotten_replies;
ALTER TABLE dialogs DROP COLUMN extracted_through;
DROP TABLE dialog_summaries;
DROP TABLE memories;
