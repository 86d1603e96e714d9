-- Graft registry schema, version 11: model signatures (issue 29).
-- A shipped migration is never edited; later changes go in a new file.

-- A checkpoint's OpenSSF model signature (a `model.sig` Sigstore bundle), kept byte for byte so
-- that an export writes it back unchanged. `origin` is `graft` for one `graft sign` made, or
-- `imported` for one that came with a registered directory; `verified` says whether a public
-- key checked it against the files (at `graft sign`, or `--public-key` when registered).
-- `signed_at` is when Graft signed it or when it was registered. One per checkpoint: signing
-- again replaces it. Removed with its checkpoint.
CREATE TABLE checkpoint_signatures (
    checkpoint_id INTEGER PRIMARY KEY REFERENCES checkpoints(id) ON DELETE CASCADE,
    bundle        BLOB    NOT NULL,
    key_hint      TEXT,
    root_digest   TEXT    NOT NULL CHECK (length(root_digest) = 64),
    file_count    INTEGER NOT NULL CHECK (file_count >= 0),
    signed_at     TEXT    NOT NULL,
    verified      INTEGER NOT NULL CHECK (verified IN (0, 1)),
    origin        TEXT    NOT NULL CHECK (origin IN ('graft', 'imported'))
);
