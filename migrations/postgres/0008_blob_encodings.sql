-- Stored encodings of blobs (issue 27), as SQLite's migration 0012: how `graft compact` keeps a
-- stored blob (codec, the bytes the blob store holds, a delta's base), and the base kept alive
-- through blob_references (under checkpoint 0, which no checkpoint has).
ALTER TABLE blobs ADD COLUMN codec text COLLATE "C" NOT NULL DEFAULT 'raw' CHECK (codec IN ('raw', 'bg-zstd', 'xor-bg-zstd'));
ALTER TABLE blobs ADD COLUMN stored_length bigint CHECK (stored_length IS NULL OR stored_length >= 0);
ALTER TABLE blobs ADD COLUMN base_digest text COLLATE "C" CHECK (base_digest IS NULL OR length(base_digest) = 64);
CREATE INDEX blobs_by_base ON blobs (base_digest) WHERE base_digest IS NOT NULL;

CREATE OR REPLACE VIEW blob_references (checkpoint_id, blob_digest) AS
    SELECT checkpoint_id, blob_digest FROM checkpoint_tensors
    UNION ALL
    SELECT checkpoint_id, blob_digest FROM checkpoint_files WHERE blob_digest IS NOT NULL
    UNION ALL
    SELECT 0, base_digest FROM blobs WHERE base_digest IS NOT NULL;
