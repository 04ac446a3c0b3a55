-- SPEC 7.2: once the cause of a parked row is fixed, an admin re-publishes it (the relay takes it
-- again, in seq order) or discards it with a reason. Every such decision is kept here.
ALTER TABLE outbox ADD COLUMN discarded_at timestamptz;
CREATE TABLE outbox_resolutions (
    id           bigserial   PRIMARY KEY,
    seq          bigint      NOT NULL,
    event_id     text        NOT NULL,
    topic        text        NOT NULL,
    action       text        NOT NULL CHECK (action IN ('republish', 'discard')),
    actor        text        NOT NULL,
    reason       text        NOT NULL,
    park_reason  text,
    at           timestamptz NOT NULL DEFAULT now()
);
