-- Browser sessions for the web view (issue 23), as SQLite's migration 0007: the cookie holds a
-- random session id, the registry its SHA-256; a session lives while its token is active, until
-- idle too long, past its absolute lifetime or signed out. Times in seconds since the epoch.
CREATE TABLE sessions (
    id_hash    bytea  PRIMARY KEY CHECK (length(id_hash) = 32),
    token_id   bigint NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,
    created_at double precision NOT NULL,
    last_seen  double precision NOT NULL
);
CREATE INDEX sessions_by_token ON sessions (token_id);
