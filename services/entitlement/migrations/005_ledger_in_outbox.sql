-- The ledger is stored once (issue 13, "the same event stored twice"): every entry was written
-- twice on the hot path, as its outbox row and again as a ledger row (heap row, two index entries,
-- its JSON checked: 40% of a deduction batch's append). The outbox rows on aimis.ledger.v1 are now
-- the ledger: in commit order already (the append lock, shared/sql/006_outbox_cursor.sql), kept
-- after they are sent (outbox_kept), found per org by `outbox_ledger_by_org`; `ledger` is a view.
-- Entries from before this migration stay in `ledger_before` with their seq; the outbox's seq goes on
-- above them, so a reader's cursor (`GET /v1/orgs/{org}/ledger?after=`) keeps its meaning and the
-- view reads each entry once (outbox rows below the boundary are the copies of `ledger_before`).
-- No writer appends meanwhile: the migration holds the outbox's append lock, as they do.
-- (The view depends on outbox's columns: a later migration changing one of them recreates it.)
SELECT pg_advisory_xact_lock(hashtext('outbox-append:' || current_schema()));

ALTER TABLE ledger RENAME TO ledger_before;
ALTER INDEX ledger_pkey RENAME TO ledger_before_pkey;
ALTER INDEX ledger_by_org RENAME TO ledger_before_by_org;

SELECT setval('outbox_seq_seq', greatest((SELECT max(seq) FROM outbox), (SELECT max(seq) FROM ledger_before), 1));
INSERT INTO outbox_kept (topic, after_seq) SELECT 'aimis.ledger.v1', last_value FROM outbox_seq_seq;

CREATE INDEX outbox_ledger_by_org ON outbox (key, seq) WHERE topic = 'aimis.ledger.v1';

-- `ledger_since`: the entries stored once. An entry's org is its outbox key (the event's subject);
-- type, time and data come from the event as published, parsed per row read.
DO $$
BEGIN
    EXECUTE format($view$
        CREATE VIEW ledger_since AS
        SELECT o.seq, o.event_id, o.key AS org_id, e.data ->> 'resource' AS resource, e.type, e.time, e.data
        FROM outbox o
        CROSS JOIN LATERAL json_to_record(convert_from(o.payload, 'UTF8')::json) AS e(type text, time timestamptz, data json)
        WHERE o.topic = 'aimis.ledger.v1' AND o.seq > %s$view$,
        (SELECT after_seq FROM outbox_kept WHERE topic = 'aimis.ledger.v1'));
END
$$;
-- The whole ledger, for readers (the API pages the two parts apart: entitlement/store.py).
CREATE VIEW ledger AS
SELECT seq, event_id, org_id, resource, type, time, data FROM ledger_before
UNION ALL
SELECT seq, event_id, org_id, resource, type, time, data FROM ledger_since;
