-- The relay's bookkeeping cost as much as the rows themselves (issue 13): each row's key was
-- written to outbox_pending, read back, deleted, and the row updated with sent_at, two rows
-- written and two changed per event, on every service's hot path. Now the outbox is a log read in
-- seq order: what is sent is everything up to `outbox_cursor.sent_upto` (one row, moved once per
-- published batch). That is sound because writers append in commit order: `outbox.add_rows` takes
-- a transaction-level lock of the schema's outbox before the rows get their seq and holds it to
-- commit, so no row can appear later below a seq the relay has already seen.
-- `sent_at` is now set only on a row sent out of that order (a re-published parked row) and on the
-- rows sent before this migration; `parked_at` as before.
CREATE TABLE outbox_cursor (
    one        boolean PRIMARY KEY DEFAULT true CHECK (one),
    sent_upto  bigint  NOT NULL
);
-- Start below the oldest row still to send (rows after it that were sent keep their sent_at and
-- are skipped).
INSERT INTO outbox_cursor (sent_upto)
SELECT coalesce((SELECT min(seq) - 1 FROM outbox_pending), (SELECT max(seq) FROM outbox), 0);
-- Parked rows an admin re-published: the relay sends these first, then the log.
CREATE TABLE outbox_republish (seq bigint PRIMARY KEY);
DROP TABLE outbox_pending;
ALTER TABLE outbox SET (fillfactor = 100);  -- rows are no longer updated when sent
-- Where each row stands, for operators and tests: sent, unsent, parked or discarded.
CREATE VIEW outbox_state AS
SELECT o.seq, o.event_id, o.topic, o.key, o.created_at,
       CASE WHEN o.discarded_at IS NOT NULL THEN 'discarded'
            WHEN o.parked_at IS NOT NULL THEN 'parked'
            WHEN o.sent_at IS NOT NULL THEN 'sent'
            WHEN o.seq <= c.sent_upto AND NOT EXISTS (SELECT 1 FROM outbox_republish r WHERE r.seq = o.seq)
                THEN 'sent'
            ELSE 'unsent' END AS state
FROM outbox o CROSS JOIN outbox_cursor c;
