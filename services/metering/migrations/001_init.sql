-- Organisations whose cooperation agreement was seen on aimis.orders.v1 (agreement_recorded).
CREATE TABLE known_orgs (
    org_id       text        PRIMARY KEY,
    recorded_at  timestamptz NOT NULL,
    seen_at      timestamptz NOT NULL DEFAULT now()
);

-- Hourly usage aggregates (hour = the usage event's `time`, truncated to the UTC hour).
-- accepted_qty: quantities forwarded as deduction_requested; rejected_qty: rejected by metering
-- for an org with an agreement (quantity as reported when valid, else 1 per rejected event).
CREATE TABLE usage_hourly (
    org_id        text        NOT NULL,
    resource      text        NOT NULL CHECK (resource IN ('cloud_inspection', 'ai_review')),
    hour          timestamptz NOT NULL,
    accepted_qty  bigint      NOT NULL DEFAULT 0,
    rejected_qty  bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, resource, hour)
);
