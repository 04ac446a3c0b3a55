-- The inbox claims were PostgreSQL's largest statements on the usage path (issue 13: two a use,
-- 10-16 µs a row): each claim descends the primary key comparing `(stream, message_id)` under the
-- database's collation (C.UTF-8 here: strcoll per comparison). The keys are identifiers, compared
-- for equality only and never sorted for a reader, so they are compared byte by byte.
ALTER TABLE inbox
    ALTER COLUMN stream TYPE text COLLATE "C",
    ALTER COLUMN message_id TYPE text COLLATE "C";
