-- A warm sandbox is started before any session needs it: it has no session until one claims
-- it, and its pool token is replaced by the session's token at that moment.
ALTER TABLE sandboxes ALTER COLUMN session_id DROP NOT NULL;
