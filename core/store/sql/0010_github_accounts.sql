-- A person's GitHub account, linked through the OAuth web flow. Tokens are sealed with
-- AES-256-GCM under the secrets key named by key_id (bound to the person's id); `pending` until
-- the person confirms the link in Slack, so nobody can link their GitHub account to someone
-- else's identity.
CREATE TABLE github_accounts (
    person_id          text PRIMARY KEY,
    github_id          bigint NOT NULL,
    login              text NOT NULL,
    name               text,
    email              text NOT NULL,
    key_id             text NOT NULL,
    access_token       bytea NOT NULL,
    refresh_token      bytea,
    access_expires_at  timestamptz,
    refresh_expires_at timestamptz,
    confirmed          boolean NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
