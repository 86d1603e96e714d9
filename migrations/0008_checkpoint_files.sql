-- Graft registry schema, version 8: checkpoints kept as model directories (issue 24).
-- A shipped migration is never edited; later changes go in a new file.

-- The files of a checkpoint imported from a model directory, by relative POSIX path. A shard
-- is safetensors weights: its own header bytes and a range of the checkpoint's tensors (names
-- are global across shards; `checkpoint_tensors` holds them all, shard after shard). Any other
-- file (config, tokenizer, card) is a content-addressed blob, like a tensor's. A checkpoint
-- imported from one file has no rows here.
CREATE TABLE checkpoint_files (
    checkpoint_id INTEGER NOT NULL REFERENCES checkpoints(id) ON DELETE CASCADE,
    path          TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('shard', 'file')),
    header        BLOB,
    first_tensor  INTEGER,
    tensor_count  INTEGER,
    blob_digest   TEXT    REFERENCES blobs(digest),
    byte_length   INTEGER NOT NULL CHECK (byte_length >= 0),
    PRIMARY KEY (checkpoint_id, path),
    CHECK ((kind = 'shard') = (header IS NOT NULL AND first_tensor IS NOT NULL AND tensor_count IS NOT NULL AND blob_digest IS NULL)),
    CHECK ((kind = 'file') = (blob_digest IS NOT NULL))
) WITHOUT ROWID;
CREATE INDEX checkpoint_files_by_blob ON checkpoint_files (blob_digest) WHERE blob_digest IS NOT NULL;

-- Every reference a checkpoint holds to a blob: what gc, removals and verify keep alive.
CREATE VIEW blob_references (checkpoint_id, blob_digest) AS
    SELECT checkpoint_id, blob_digest FROM checkpoint_tensors
    UNION ALL
    SELECT checkpoint_id, blob_digest FROM checkpoint_files WHERE blob_digest IS NOT NULL;

-- The idempotency key a client chose for a commit (the upload protocol's `idempotency_key`):
-- a commit retried after a lost answer finds its checkpoint instead of committing twice.
ALTER TABLE checkpoints ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX checkpoints_by_idempotency_key ON checkpoints (model_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
