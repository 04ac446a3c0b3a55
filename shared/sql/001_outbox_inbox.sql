-- Transactional outbox: rows written in the caller's transaction, published by the relay in seq order.
CREATE TABLE outbox (
    seq         bigserial PRIMARY KEY,
    event_id    text        NOT NULL,
    topic       text        NOT NULL,
    key         text        NOT NULL,
    payload     bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);
CREATE INDEX outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;

-- Inbox: one row per processed upstream message, inserted with the effect it caused.
CREATE TABLE inbox (
    stream        text        NOT NULL,
    message_id    text        NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, message_id)
);
