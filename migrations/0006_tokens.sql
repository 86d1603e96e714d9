-- Graft registry schema, version 6: tokens for `graft serve`.
-- A shipped migration is never edited; later changes go in a new file.

-- A token is stored as the SHA-256 of its secret (256 random bits), never in clear. Revoking
-- keeps the row (when, and by which name) and frees the name for a new token.
CREATE TABLE tokens (
    id           INTEGER PRIMARY KEY,
    name         TEXT    NOT NULL,
    secret_hash  BLOB    NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    scope        TEXT    NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    models       TEXT,
    created_at   TEXT    NOT NULL,
    revoked_at   TEXT
);

CREATE UNIQUE INDEX tokens_active_name ON tokens(name) WHERE revoked_at IS NULL;
