CREATE TABLE effects (event_id text PRIMARY KEY, org_id text NOT NULL, kafka_key text NOT NULL);
