-- Graft registry schema, version 1: models, checkpoints, tensors and blobs.
-- A shipped migration is never edited; later changes go in a new file.

-- A model: a pretrained base (with provenance) or, from a later migration on, a student.
CREATE TABLE models (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    kind          TEXT    NOT NULL CHECK (kind IN ('base', 'student')),
    description   TEXT,
    source        TEXT,
    license       TEXT,
    dataset       TEXT,
    architecture  TEXT,
    task          TEXT,
    metadata      TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    created_at    TEXT    NOT NULL
);

-- Tensor bytes by SHA-256. Small tensors live here inline; the rest are files under
-- blobs/sha256/ab/<digest>, and inline_data is NULL.
CREATE TABLE blobs (
    digest        TEXT    PRIMARY KEY CHECK (length(digest) = 64),
    byte_length   INTEGER NOT NULL CHECK (byte_length >= 0),
    inline_data   BLOB    CHECK (inline_data IS NULL OR length(inline_data) = byte_length),
    created_at    TEXT    NOT NULL
) WITHOUT ROWID;

-- An immutable checkpoint, numbered from 1 within its model. `header` is the original
-- safetensors header (length prefix and JSON) so export is byte-exact; `digest` is the
-- SHA-256 of the header followed by each tensor's raw digest in data order; `header_digest`
-- the SHA-256 of the header alone.
CREATE TABLE checkpoints (
    id              INTEGER PRIMARY KEY,
    model_id        INTEGER NOT NULL REFERENCES models(id) ON DELETE RESTRICT,
    number          INTEGER NOT NULL CHECK (number >= 1),
    digest          TEXT    NOT NULL CHECK (length(digest) = 64),
    header          BLOB    NOT NULL,
    header_digest   TEXT    NOT NULL CHECK (length(header_digest) = 64),
    metadata        TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    tensor_count    INTEGER NOT NULL,
    parameter_count INTEGER NOT NULL,
    data_bytes      INTEGER NOT NULL,
    file_bytes      INTEGER NOT NULL,
    step            INTEGER,
    epoch           INTEGER,
    created_at      TEXT    NOT NULL,
    UNIQUE (model_id, number)
);
CREATE INDEX checkpoints_by_digest ON checkpoints (digest);
-- Finds checkpoints with the same header: an import of such a file hashes before writing.
CREATE INDEX checkpoints_by_header ON checkpoints (header_digest);

-- The tensors of a checkpoint, in data-section order.
CREATE TABLE checkpoint_tensors (
    checkpoint_id   INTEGER NOT NULL REFERENCES checkpoints(id) ON DELETE CASCADE,
    position        INTEGER NOT NULL,
    name            TEXT    NOT NULL,
    dtype           TEXT    NOT NULL,
    shape           TEXT    NOT NULL CHECK (json_valid(shape)),
    element_count   INTEGER NOT NULL,
    byte_length     INTEGER NOT NULL,
    blob_digest     TEXT    NOT NULL REFERENCES blobs(digest),
    PRIMARY KEY (checkpoint_id, position),
    UNIQUE (checkpoint_id, name)
) WITHOUT ROWID;
CREATE INDEX checkpoint_tensors_by_blob ON checkpoint_tensors (blob_digest);
