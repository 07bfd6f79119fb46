-- Abuse controls whose state must be shared by every node and survive a restart.

-- Solved CAPTCHA challenges, kept until the challenge expires: a solution is accepted once,
-- cluster-wide. challenge_id is (a prefix of) the challenge's HMAC signature, never user data.
-- Rows past expires_at are dead weight only: a challenge past expiry is refused before this
-- table is asked, and purgeExpiredCaptchaSolutions deletes them in bounded batches.
CREATE TABLE captcha_solutions_used (
  challenge_id text        PRIMARY KEY CHECK (length(challenge_id) BETWEEN 16 AND 128),
  expires_at   timestamptz NOT NULL
);
CREATE INDEX captcha_solutions_used_expiry ON captcha_solutions_used (expires_at);

-- How often each fraud rule fired, for the statistics endpoint. Nodes count in memory and add
-- their deltas every few seconds (one upsert per flush). election_id is '' for rules not tied
-- to an election (registration, login); vote rules are counted under their election.
CREATE TABLE fraud_rule_hits (
  election_id text   NOT NULL CHECK (length(election_id) <= 64),
  rule        text   NOT NULL CHECK (length(rule) BETWEEN 1 AND 64),
  action      text   NOT NULL CHECK (action IN ('flag', 'reject')),
  hits        bigint NOT NULL CHECK (hits >= 0),
  PRIMARY KEY (election_id, rule, action)
);
