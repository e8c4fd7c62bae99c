-- Links to a session's page carry the generation they were issued at; revoking the session's
-- links bumps it, which voids every earlier link at once.
ALTER TABLE sessions ADD COLUMN link_generation integer NOT NULL DEFAULT 0;
