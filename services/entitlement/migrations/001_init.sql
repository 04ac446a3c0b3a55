-- Entitlement: the only writer of balances.

-- One row per org+resource, created on first use: the lock every change of that balance takes
-- (SELECT ... FOR UPDATE), and the running counters of SPEC 4.
CREATE TABLE balances (
    org_id           text   NOT NULL,
    resource         text   NOT NULL CHECK (resource IN ('cloud_inspection', 'ai_review')),
    purchased        bigint NOT NULL DEFAULT 0,
    drawn_by_usage   bigint NOT NULL DEFAULT 0,
    arrears_recorded bigint NOT NULL DEFAULT 0,
    arrears_offset   bigint NOT NULL DEFAULT 0,
    forfeited        bigint NOT NULL DEFAULT 0,
    offline_counted  bigint NOT NULL DEFAULT 0,
    rejected         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, resource),
    CHECK (arrears_offset <= arrears_recorded)
);

CREATE TABLE lots (
    lot_id        text        PRIMARY KEY,           -- {order_id}.{line}
    org_id        text        NOT NULL,
    resource      text        NOT NULL,
    order_id      text        NOT NULL,
    line          int         NOT NULL,
    sku           text        NOT NULL,
    quantity      int         NOT NULL CHECK (quantity > 0),
    remaining     int         NOT NULL CHECK (remaining >= 0 AND remaining <= quantity),
    storage_years int,
    credited_at   timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    status        text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'expired')),
    forfeited     int         NOT NULL DEFAULT 0,
    expired_at    timestamptz
);
CREATE INDEX lots_drawable ON lots (org_id, resource, expires_at, credited_at, lot_id)
    WHERE status = 'active' AND remaining > 0;
CREATE INDEX lots_by_org ON lots (org_id, resource, credited_at);

-- Uses (cloud inspections) no lot covered; `outstanding` falls as later lots offset them.
CREATE TABLE arrears (
    usage_id    text        PRIMARY KEY,
    org_id      text        NOT NULL,
    resource    text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    quantity    int         NOT NULL CHECK (quantity > 0),
    outstanding int         NOT NULL CHECK (outstanding >= 0 AND outstanding <= quantity)
);
CREATE INDEX arrears_open ON arrears (org_id, resource, occurred_at, usage_id) WHERE outstanding > 0;

-- One licence per org+feature (licence_id = {org_id}:{feature}); periods stack.
CREATE TABLE licences (
    licence_id text        PRIMARY KEY,
    org_id     text        NOT NULL,
    feature    text        NOT NULL,
    starts_at  timestamptz NOT NULL,                 -- start of the current contiguous run
    ends_at    timestamptz,                          -- null: perpetual
    status     text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'expired')),
    ended_at   timestamptz
);
CREATE INDEX licences_by_org ON licences (org_id);

CREATE TABLE licence_periods (
    order_id     text        NOT NULL,
    line         int         NOT NULL,
    licence_id   text        NOT NULL REFERENCES licences,
    period_start timestamptz NOT NULL,
    period_end   timestamptz,
    PRIMARY KEY (order_id, line)
);

CREATE TABLE services (
    service_id   text        PRIMARY KEY,            -- {order_id}.{line}
    org_id       text        NOT NULL,
    order_id     text        NOT NULL,
    line         int         NOT NULL,
    sku          text        NOT NULL,
    mode         text,
    quantity     int,
    years        int,
    purchased_at timestamptz NOT NULL,
    accept_by    timestamptz,
    ends_at      timestamptz,
    status       text        NOT NULL
        CHECK (status IN ('awaiting_acceptance', 'accepted', 'expired', 'active', 'ended')),
    accepted_at  timestamptz,
    closed_at    timestamptz
);
CREATE INDEX services_by_org ON services (org_id, purchased_at);

-- Orders whose every line is credited (in the transaction that emitted order_fulfilled).
CREATE TABLE fulfilled_orders (
    order_id     text        PRIMARY KEY,
    org_id       text        NOT NULL,
    lines        int         NOT NULL,
    paid_at      timestamptz NOT NULL,
    fulfilled_at timestamptz NOT NULL
);

-- Every ledger event emitted (also sent through the outbox); seq is the API cursor.
CREATE TABLE ledger (
    seq      bigserial   PRIMARY KEY,
    event_id text        NOT NULL,
    org_id   text        NOT NULL,
    resource text,
    type     text        NOT NULL,
    time     timestamptz NOT NULL,
    data     jsonb       NOT NULL
);
CREATE INDEX ledger_by_org ON ledger (org_id, seq);
CREATE INDEX ledger_by_org_resource ON ledger (org_id, resource, seq);
