-- The e-mail a prompt's commits carry (e.g. the CLI user's git identity); NULL means the
-- person's no-reply address.
ALTER TABLE prompts ADD COLUMN author_email text;
