-- Graft registry schema, version 12: stored encodings of blobs (issue 27).
-- A shipped migration is never edited; later changes go in a new file.

-- How a stored blob is kept (`graft compact`): `codec` is raw, bg-zstd (byte planes, zstd) or
-- xor-bg-zstd (XOR with `base_digest`'s raw bytes first); `stored_length` the bytes the blob
-- store holds (NULL: the raw length). The digest stays the SHA-256 of the raw bytes. A delta's
-- base is recorded before the delta replaces the raw bytes, so a base is never removed while
-- a blob depends on it: blob_references lists it (under checkpoint 0, which no checkpoint has).
ALTER TABLE blobs ADD COLUMN codec TEXT NOT NULL DEFAULT 'raw' CHECK (codec IN ('raw', 'bg-zstd', 'xor-bg-zstd'));
ALTER TABLE blobs ADD COLUMN stored_length INTEGER CHECK (stored_length IS NULL OR stored_length >= 0);
ALTER TABLE blobs ADD COLUMN base_digest TEXT CHECK (base_digest IS NULL OR length(base_digest) = 64);
CREATE INDEX blobs_by_base ON blobs (base_digest) WHERE base_digest IS NOT NULL;

DROP VIEW blob_references;
CREATE VIEW blob_references (checkpoint_id, blob_digest) AS
    SELECT checkpoint_id, blob_digest FROM checkpoint_tensors
    UNION ALL
    SELECT checkpoint_id, blob_digest FROM checkpoint_files WHERE blob_digest IS NOT NULL
    UNION ALL
    SELECT 0, base_digest FROM blobs WHERE base_digest IS NOT NULL;
