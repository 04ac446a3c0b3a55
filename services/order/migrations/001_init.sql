-- Order service schema ("ordering": `order` is a reserved SQL word).

-- The signed offline cooperation agreement of each organisation (SPEC 2.1).
CREATE TABLE agreements (
    org_id        text        PRIMARY KEY,
    agreement_ref text        NOT NULL,
    signed_at     timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL
);

CREATE SEQUENCE payment_seq;

CREATE TABLE orders (
    seq                bigserial   UNIQUE,          -- creation order; the list cursor
    order_id           text        PRIMARY KEY,
    org_id             text        NOT NULL,
    status             text        NOT NULL CHECK (status IN ('placed', 'paid', 'fulfilled', 'cancelled')),
    request            jsonb       NOT NULL,        -- the normalised request, for idempotency
    imported           boolean     NOT NULL DEFAULT false,
    total              numeric(14, 2) NOT NULL,
    price_book_version text        NOT NULL,
    placed_at          timestamptz NOT NULL,
    paid_at            timestamptz,
    payment_ref        text,
    payment_seq        bigint,                      -- order in which payments were taken
    cancelled_at       timestamptz,
    fulfilled_at       timestamptz,
    CHECK ((status IN ('paid', 'fulfilled')) = (paid_at IS NOT NULL))
);
CREATE INDEX orders_by_org ON orders (org_id, seq);

CREATE TABLE order_lines (
    order_id      text    NOT NULL REFERENCES orders (order_id),
    line          int     NOT NULL,
    sku           text    NOT NULL,
    quantity      int,
    storage_years int,
    months        int,
    feature       text,
    mode          text,
    years         int,
    price         numeric(14, 2) NOT NULL,
    PRIMARY KEY (order_id, line)
);
CREATE INDEX order_lines_basic ON order_lines (order_id) WHERE sku = 'SW-BASIC';
