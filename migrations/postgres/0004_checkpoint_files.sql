-- Checkpoints kept as model directories (issue 24), as SQLite's migration 0008: the files of a
-- checkpoint imported from a model directory, by relative POSIX path. A shard keeps its header
-- bytes and a range of the checkpoint's tensors (names global across shards); any other file is
-- a content-addressed blob. A checkpoint imported from one file has no rows here.
CREATE TABLE checkpoint_files (
    checkpoint_id bigint NOT NULL REFERENCES checkpoints(id) ON DELETE CASCADE,
    path          text   COLLATE "C" NOT NULL,
    kind          text   NOT NULL CHECK (kind IN ('shard', 'file')),
    header        bytea,
    first_tensor  integer,
    tensor_count  integer,
    blob_digest   text   COLLATE "C" REFERENCES blobs(digest),
    byte_length   bigint NOT NULL CHECK (byte_length >= 0),
    PRIMARY KEY (checkpoint_id, path),
    CHECK ((kind = 'shard') = (header IS NOT NULL AND first_tensor IS NOT NULL AND tensor_count IS NOT NULL AND blob_digest IS NULL)),
    CHECK ((kind = 'file') = (blob_digest IS NOT NULL))
);
CREATE INDEX checkpoint_files_by_blob ON checkpoint_files (blob_digest) WHERE blob_digest IS NOT NULL;

-- Every reference a checkpoint holds to a blob: what gc, removals and verify keep alive.
CREATE VIEW blob_references (checkpoint_id, blob_digest) AS
    SELECT checkpoint_id, blob_digest FROM checkpoint_tensors
    UNION ALL
    SELECT checkpoint_id, blob_digest FROM checkpoint_files WHERE blob_digest IS NOT NULL;

-- The idempotency key a client chose for a commit (the upload protocol's `idempotency_key`):
-- a commit retried after a lost answer finds its checkpoint instead of committing twice.
ALTER TABLE checkpoints ADD COLUMN idempotency_key text COLLATE "C";
CREATE UNIQUE INDEX checkpoints_by_idempotency_key ON checkpoints (model_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
