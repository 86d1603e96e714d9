-- Graft registry schema, version 7: browser sessions for the web view (issue 23).
-- A shipped migration is never edited; later changes go in a new file.

-- Signing in with a token opens a session: the browser's cookie holds a random session id, never
-- the token, and the registry keeps only the id's SHA-256. A session lives while its token is
-- active, until it has been idle too long or has reached its absolute lifetime (the server's
-- settings; times in seconds since the epoch), or until it signs out.
CREATE TABLE sessions (
    id_hash    BLOB    PRIMARY KEY CHECK (length(id_hash) = 32),
    token_id   INTEGER NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,
    created_at REAL    NOT NULL,
    last_seen  REAL    NOT NULL
) WITHOUT ROWID;

CREATE INDEX sessions_by_token ON sessions(token_id);
