-- Graft registry schema (PostgreSQL), version 6: the drift cache of exposure (issue 26).
-- A shipped migration is never edited; later changes go in a new file.

-- As in the SQLite store's 0010: per pair of blobs read as one dtype, the sum of squared
-- differences and the ancestor's sum of squares. Digests name immutable bytes, so a row never
-- goes stale.
CREATE TABLE tensor_drift (
    ancestor_digest   text COLLATE "C" NOT NULL CHECK (length(ancestor_digest) = 64),
    descendant_digest text COLLATE "C" NOT NULL CHECK (length(descendant_digest) = 64),
    dtype             text NOT NULL,
    difference        double precision NOT NULL CHECK (difference >= 0),
    magnitude         double precision NOT NULL CHECK (magnitude >= 0),
    PRIMARY KEY (ancestor_digest, descendant_digest, dtype)
);
