-- Graft registry schema, version 10: the drift cache of exposure (issue 26).
-- A shipped migration is never edited; later changes go in a new file.

-- How far a descendant's tensor has moved from its ancestor's, per pair of blobs read as one
-- dtype: the sum of squared differences and the ancestor's sum of squares, so that a layer's or
-- a checkpoint's relative L2 drift sqrt(Σ difference) / sqrt(Σ magnitude) adds pairs up.
-- Digests name immutable bytes, so a row never goes stale; gc drops rows whose blobs it removes.
CREATE TABLE tensor_drift (
    ancestor_digest   TEXT NOT NULL CHECK (length(ancestor_digest) = 64),
    descendant_digest TEXT NOT NULL CHECK (length(descendant_digest) = 64),
    dtype             TEXT NOT NULL,
    difference        REAL NOT NULL CHECK (difference >= 0),
    magnitude         REAL NOT NULL CHECK (magnitude >= 0),
    PRIMARY KEY (ancestor_digest, descendant_digest, dtype)
) WITHOUT ROWID;
