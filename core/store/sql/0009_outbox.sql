-- Messages that must reach people exactly once (a prompt's card, a failure). A row is written
-- before its message is sent; a sender claims it for a while, sends it marked with its key and
-- records where it landed. A sender that died half-way leaves a claim that lapses, and the next
-- one looks for the mark before sending again.
CREATE TABLE outbox (
    key           text PRIMARY KEY,
    destination   text NOT NULL,
    session_id    text,
    body          jsonb NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    claimed_by    text,
    claimed_until timestamptz,
    posted_ref    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    posted_at     timestamptz
);
CREATE INDEX outbox_due ON outbox (created_at) WHERE posted_at IS NULL;

-- Finding prompts that ended without their report (a front door was down when they did).
CREATE INDEX prompts_finished ON prompts (finished_at) WHERE finished_at IS NOT NULL;

-- Prompts that ended before the outbox existed were reported already.
INSERT INTO outbox (key, destination, session_id, body, posted_at)
SELECT 'report:' || id, '', session_id, '{}', now() FROM prompts
WHERE state NOT IN ('queued', 'running');
