-- What a person's next session starts with when their request says nothing else; NULL means
-- the deployment's default. Keyed like users.id (`slack:<team>:<user>`).
CREATE TABLE user_defaults (
    user_id    text PRIMARY KEY,
    repository text,
    model      text,
    branch     text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- "A person's sessions" (the Slack Home tab) starts from their participations; the primary key
-- (session_id, user_id) cannot serve a lookup by person.
CREATE INDEX participants_user ON participants (user_id);
