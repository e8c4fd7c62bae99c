-- A request that named no repository waits here until someone picks one: durable, so a
-- restart or another replica can start it, and taken once (DELETE … RETURNING).
CREATE TABLE pending_requests (
    key        text PRIMARY KEY,
    data       jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
