-- What a session chose when it was created, fixed for its life; NULL means the deployment's
-- default (OPEN_INSPECT_MODEL, the repository's default branch).
ALTER TABLE sessions ADD COLUMN model text, ADD COLUMN branch text;
