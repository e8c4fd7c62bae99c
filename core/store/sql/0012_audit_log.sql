-- Who did what, append-only: secrets set and deleted, keys rotated, settings changed, sessions
-- started, prompts submitted, pull requests opened, git tokens issued. Never a secret value:
-- targets and details hold names, ids and counts.
CREATE TABLE audit_log (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL,
    action  text NOT NULL,
    target  text NOT NULL DEFAULT '',
    details jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at);
