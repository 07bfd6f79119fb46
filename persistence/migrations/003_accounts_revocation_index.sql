-- Every node polls revoked_sessions every 2 s for rows after its cursor (revoked_at, session_id):
-- keep that a range scan, not a sequential one.
CREATE INDEX revoked_sessions_revoked_at ON revoked_sessions (revoked_at, session_id);
-- The pruner deletes sessions whose access tokens have all expired.
CREATE INDEX revoked_sessions_expires_at ON revoked_sessions (expires_at);
