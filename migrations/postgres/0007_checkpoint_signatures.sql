-- Model signatures (issue 29), as SQLite's migration 0011: a checkpoint's OpenSSF model
-- signature (a `model.sig` Sigstore bundle) kept byte for byte, whether a public key checked it,
-- who made it (`graft sign` or a registered directory) and when. One per checkpoint.
CREATE TABLE checkpoint_signatures (
    checkpoint_id bigint  PRIMARY KEY REFERENCES checkpoints(id) ON DELETE CASCADE,
    bundle        bytea   NOT NULL,
    key_hint      text    COLLATE "C",
    root_digest   text    COLLATE "C" NOT NULL CHECK (length(root_digest) = 64),
    file_count    integer NOT NULL CHECK (file_count >= 0),
    signed_at     text    NOT NULL,
    verified      boolean NOT NULL,
    origin        text    NOT NULL CHECK (origin IN ('graft', 'imported'))
);
