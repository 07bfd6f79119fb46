-- Accounts: no plain-text email is ever stored. email_hash is HMAC-SHA256(emailHashKey,
-- lower(email)): enough to find an account at login, useless to whoever reads the table.
-- voter_number is dense (a sequence from 0) so a shard's bitmap is ceil(voters / shards) bits.
CREATE SEQUENCE voter_number_seq AS bigint MINVALUE 0 START WITH 0;

CREATE TABLE users (
  user_id        uuid PRIMARY KEY,
  voter_number   bigint NOT NULL UNIQUE DEFAULT nextval('voter_number_seq'),
  email_hash     bytea UNIQUE,
  password_hash  text,
  role           text NOT NULL DEFAULT 'viewer' CHECK (role IN ('viewer', 'broadcaster', 'admin')),
  created_at     timestamptz NOT NULL DEFAULT now(),
  erased_at      timestamptz,
  CHECK ((erased_at IS NULL) = (email_hash IS NOT NULL AND password_hash IS NOT NULL))
);
ALTER SEQUENCE voter_number_seq OWNED BY users.voter_number;

-- Refresh tokens rotate on every use. A family is one login; reuse of a rotated token means it
-- leaked, so the whole family is revoked. Only a SHA-256 of the token is stored.
CREATE TABLE refresh_tokens (
  token_hash   bytea PRIMARY KEY,
  family_id    uuid NOT NULL,
  user_id      uuid NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
  issued_at    timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL,
  rotated_at   timestamptz,
  revoked_at   timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

-- Logged-out sessions: access tokens carry their session (family) id; a revoked one is refused
-- until the token would have expired anyway.
CREATE TABLE revoked_sessions (
  session_id   uuid PRIMARY KEY,
  revoked_at   timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL
);

CREATE TABLE elections (
  election_id  uuid PRIMARY KEY,
  title        text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
  status       text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'open', 'closed')),
  shard_count  integer NOT NULL CHECK (shard_count BETWEEN 1 AND 1024),
  created_by   uuid REFERENCES users (user_id),
  created_at   timestamptz NOT NULL DEFAULT now(),
  opened_at    timestamptz,
  closed_at    timestamptz
);

-- A candidate's index (0..63) is what a vote row stores: tallies are arrays indexed by it.
CREATE TABLE candidates (
  election_id     uuid NOT NULL REFERENCES elections (election_id) ON DELETE CASCADE,
  candidate_index smallint NOT NULL CHECK (candidate_index BETWEEN 0 AND 63),
  candidate_id    uuid NOT NULL UNIQUE,
  name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  PRIMARY KEY (election_id, candidate_index)
);
