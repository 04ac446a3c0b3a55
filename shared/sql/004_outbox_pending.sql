-- Marking a row sent was the relay's costliest statement (issue 13): `sent_at` was in the
-- predicate of the index that finds unsent rows, so each mark wrote a new ~700-byte row version
-- elsewhere and a new primary-key entry (a non-HOT update, ~20 µs a row). The unsent rows are now
-- the keys in `outbox_pending` (written with the row, deleted when it is sent or parked); nothing
-- indexes `sent_at`, and pages keep room for the marked version beside the old one (HOT update).
CREATE TABLE outbox_pending (seq bigint PRIMARY KEY);
INSERT INTO outbox_pending SELECT seq FROM outbox WHERE sent_at IS NULL AND parked_at IS NULL;
DROP INDEX outbox_unsent;
ALTER TABLE outbox SET (fillfactor = 50);
