-- Secrets the agent's commands get as environment variables: global (repository NULL) or for
-- one repository, whose value then wins. Values are sealed with AES-256-GCM under the secrets
-- key named by key_id, bound to the scope and the name, so a ciphertext copied to another row
-- does not decrypt there.
-- The first schema reserved a `secrets` table that nothing ever wrote to; this replaces it.
DROP TABLE secrets;
CREATE TABLE secrets (
    name        text NOT NULL,
    repository  text,
    key_id      text NOT NULL,
    ciphertext  bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL
);
-- Repositories are matched without regard to case, as GitHub does.
CREATE UNIQUE INDEX secrets_scope_name ON secrets ((lower(coalesce(repository, ''))), name);

-- Bumped with every change of a secret, so that each replica's cached redactors know when
-- they are stale with one cheap read.
CREATE TABLE secrets_generation (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    generation  bigint NOT NULL
);
INSERT INTO secrets_generation (generation) VALUES (0);
