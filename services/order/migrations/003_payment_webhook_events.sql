-- Payment provider webhook (SPEC 7.4): every event id taken, so a redelivered event changes nothing.
CREATE TABLE payment_webhook_events (
    event_id     text          PRIMARY KEY,
    order_id     text          NOT NULL,
    amount       numeric(14, 2) NOT NULL,
    payment_ref  text          NOT NULL,
    paid_at      timestamptz   NOT NULL,  -- as the provider reports it; the order's paid_at is when we took it
    received_at  timestamptz   NOT NULL
);
