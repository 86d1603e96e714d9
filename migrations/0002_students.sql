-- Graft registry schema, version 2: students, their frozen-layer manifests, lineage edges
-- and aliases. A shipped migration is never edited; later changes go in a new file.

-- How a student was derived: the transfer mode its manifest implies, and the rules it was
-- declared with (JSON), kept for display.
ALTER TABLE models ADD COLUMN transfer_mode TEXT
    CHECK (transfer_mode IS NULL OR transfer_mode IN ('feature-extraction', 'partial-finetune', 'full-finetune'));
ALTER TABLE models ADD COLUMN manifest_rules TEXT CHECK (manifest_rules IS NULL OR json_valid(manifest_rules));

-- Lineage: an edge from a student to the exact parent checkpoint it started from.
-- parent_model_id repeats the parent checkpoint's model so that ancestor and descendant
-- walks are index lookups on models alone.
CREATE TABLE model_parents (
    model_id              INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    parent_checkpoint_id  INTEGER NOT NULL REFERENCES checkpoints(id) ON DELETE RESTRICT,
    parent_model_id       INTEGER NOT NULL REFERENCES models(id) ON DELETE RESTRICT,
    relation              TEXT    NOT NULL CHECK (relation IN ('finetune', 'adapter', 'distillation', 'merge', 'quantized')),
    created_at            TEXT    NOT NULL,
    PRIMARY KEY (model_id, parent_checkpoint_id)
) WITHOUT ROWID;
CREATE INDEX model_parents_by_parent_model ON model_parents (parent_model_id);
CREATE INDEX model_parents_by_parent_checkpoint ON model_parents (parent_checkpoint_id);

-- The frozen-layer manifest, resolved per tensor against the parent checkpoint.
-- frozen: must equal parent_digest; trainable: may change; dropped: must be absent;
-- new: not in the parent (parent_digest NULL).
CREATE TABLE manifest_entries (
    model_id       INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    tensor_name    TEXT    NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('frozen', 'trainable', 'new', 'dropped')),
    dtype          TEXT,
    shape          TEXT    CHECK (shape IS NULL OR json_valid(shape)),
    element_count  INTEGER NOT NULL DEFAULT 0,
    parent_digest  TEXT,
    CHECK ((state = 'new') = (parent_digest IS NULL)),
    PRIMARY KEY (model_id, tensor_name)
) WITHOUT ROWID;

-- Named pointers to checkpoints (`production`, `candidate`); NAME@ALIAS resolves through here.
CREATE TABLE aliases (
    model_id       INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    alias          TEXT    NOT NULL,
    checkpoint_id  INTEGER NOT NULL REFERENCES checkpoints(id) ON DELETE RESTRICT,
    updated_at     TEXT    NOT NULL,
    PRIMARY KEY (model_id, alias)
) WITHOUT ROWID;
CREATE INDEX aliases_by_checkpoint ON aliases (checkpoint_id);
