-- Graft registry schema, version 9: the transfer mode `adapter` (issue 25).
-- A shipped migration is never edited; later changes go in a new file.

-- An adapter student's checkpoints hold a PEFT adapter, not the parent's tensors. SQLite cannot
-- widen a column's CHECK in place, so `models` is rebuilt by the documented procedure: the
-- runner turns foreign keys off around every migration and checks them before it commits;
-- legacy_alter_table keeps the rename from rewriting the triggers and foreign keys that name
-- `models` (they name the rebuilt table once it has the name).
PRAGMA legacy_alter_table = ON;

CREATE TABLE models_rebuilt (
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
    created_at    TEXT    NOT NULL,
    transfer_mode TEXT    CHECK (transfer_mode IS NULL
                                 OR transfer_mode IN ('feature-extraction', 'partial-finetune', 'full-finetune', 'adapter')),
    manifest_rules TEXT   CHECK (manifest_rules IS NULL OR json_valid(manifest_rules)),
    relation      TEXT,
    parent_checkpoint_id INTEGER,
    parent_checkpoint_number INTEGER,
    checkpoint_count INTEGER NOT NULL DEFAULT 0,
    lineage_path  TEXT    NOT NULL DEFAULT ''
);

INSERT INTO models_rebuilt (
    id, name, kind, description, source, license, dataset, architecture, task, metadata, created_at, transfer_mode,
    manifest_rules, relation, parent_checkpoint_id, parent_checkpoint_number, checkpoint_count, lineage_path)
SELECT
    id, name, kind, description, source, license, dataset, architecture, task, metadata, created_at, transfer_mode,
    manifest_rules, relation, parent_checkpoint_id, parent_checkpoint_number, checkpoint_count, lineage_path
FROM models;

DROP TABLE models;
ALTER TABLE models_rebuilt RENAME TO models;

CREATE INDEX models_by_lineage_path
    ON models (lineage_path, name, kind, transfer_mode, relation, parent_checkpoint_id, parent_checkpoint_number, checkpoint_count);

PRAGMA legacy_alter_table = OFF;
