-- Sessions: one per Slack thread (or CLI run). owner_epoch fences stale owners: every
-- append checks it; last_seq allocates gap-free event numbers inside the appending transaction.
CREATE TABLE sessions (
    id            text PRIMARY KEY,
    repository    text,
    state         text NOT NULL DEFAULT 'created',
    owner_replica text,
    owner_epoch   bigint NOT NULL DEFAULT 0,
    last_seq      bigint NOT NULL DEFAULT 0,
    created_by    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Where a session is talked about: a Slack thread `slack:<team>:<channel>:<thread_ts>`,
-- or `cli:<id>`.
CREATE TABLE threads (
    thread_key text PRIMARY KEY,
    session_id text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE
);
CREATE INDEX threads_session ON threads (session_id);

CREATE TABLE users (
    id           text PRIMARY KEY,
    display_name text,
    email        text,
    github_login text,
    github_id    bigint,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE participants (
    session_id text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id    text NOT NULL,
    role       text NOT NULL DEFAULT 'author' CHECK (role IN ('author', 'watcher')),
    joined_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, user_id)
);

-- The durable FIFO queue of prompts. source_key makes ingestion idempotent
-- (e.g. a Slack message's `slack:<team>:<channel>:<ts>`).
CREATE TABLE prompts (
    id          bigserial PRIMARY KEY,
    session_id  text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    source_key  text NOT NULL UNIQUE,
    author_id   text NOT NULL,
    author_name text NOT NULL,
    text        text NOT NULL,
    context     jsonb NOT NULL DEFAULT '{}',
    state       text NOT NULL DEFAULT 'queued' CHECK (state IN (
                    'queued', 'running', 'done', 'failed', 'stopped', 'cancelled', 'interrupted')),
    reason      text,
    announced   boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz
);
CREATE INDEX prompts_active ON prompts (session_id, id) WHERE state IN ('queued', 'running');

-- The append-only event log. No foreign key: the appending UPDATE on sessions already
-- proves the session exists, and a per-row FK check would halve insert throughput.
CREATE TABLE events (
    session_id text NOT NULL,
    seq        bigint NOT NULL,
    type       text NOT NULL,
    data       jsonb NOT NULL,
    prompt_id  bigint,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE artifacts (
    id         bigserial PRIMARY KEY,
    session_id text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    kind       text NOT NULL,
    name       text NOT NULL,
    url        text,
    data       jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (session_id, kind, name)
);

-- Encrypted values (AES-256-GCM): scope '' is global, otherwise `owner/name` or `user:<id>`.
CREATE TABLE secrets (
    scope      text NOT NULL,
    name       text NOT NULL,
    key_id     text NOT NULL,
    ciphertext bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, name)
);

CREATE TABLE preferences (
    user_id    text NOT NULL,
    name       text NOT NULL,
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, name)
);

CREATE TABLE settings (
    name       text PRIMARY KEY,
    value      jsonb NOT NULL,
    updated_by text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit (
    id     bigserial PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    actor  text NOT NULL,
    action text NOT NULL,
    target text,
    data   jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_at ON audit (at);
