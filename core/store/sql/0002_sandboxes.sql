-- One row per sandbox a session ever had. Only a hash of the bridge token is stored: the
-- token itself lives in the sandbox alone.
CREATE TABLE sandboxes (
    id          text PRIMARY KEY,
    session_id  text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    token_hash  bytea NOT NULL UNIQUE,
    provider    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX sandboxes_session ON sandboxes (session_id);

-- Model spend so far, kept by the session's owner as usage events are logged.
ALTER TABLE sessions ADD COLUMN cost_usd double precision NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN input_tokens bigint NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN output_tokens bigint NOT NULL DEFAULT 0;
