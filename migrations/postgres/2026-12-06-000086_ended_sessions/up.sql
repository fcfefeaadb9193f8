-- Browser sessions (console, portal) ended by a sign-out before their expiry, by session id:
-- a copy of the session cookie taken before the sign-out is refused until the session would
-- have expired anyway; then the row may go (`ended_sessions` is purged on each sign-out).
CREATE TABLE ended_sessions (
    session_id TEXT PRIMARY KEY NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
