-- Rows a service keeps as its record after they are sent: outbox housekeeping (`outbox.purge_sent`)
-- deletes no row of a topic listed here whose seq is above `after_seq`. Entitlement's ledger is its
-- outbox rows on aimis.ledger.v1 (services/entitlement/migrations/005_ledger_in_outbox.sql).
CREATE TABLE outbox_kept (
    topic      text   PRIMARY KEY,
    after_seq  bigint NOT NULL
);
