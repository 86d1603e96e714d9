-- Upload proofs (issue 23): a token confined to some models that sent a blob's bytes, hashed and
-- checked, may commit that blob within the upload window though no model it sees refers to it.
-- Without a proof a stored blob outside its models counts as absent for it, so knowing a digest
-- is never enough to reach a hidden model's bytes. Shared by every server, as pending_blobs.
CREATE TABLE upload_proofs (
    digest     text COLLATE "C" NOT NULL CHECK (length(digest) = 64),
    token      text COLLATE "C" NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (digest, token)
);
CREATE INDEX upload_proofs_by_expiry ON upload_proofs (expires_at);
