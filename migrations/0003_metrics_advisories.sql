-- Graft registry schema, version 3: metrics (evaluations and training curves) and advisories.
-- A shipped migration is never edited; later changes go in a new file.

-- An evaluation of one checkpoint: metric name, split ('' when none given) and value.
-- model_id repeats the checkpoint's model so that `best` seeks per model in one index.
CREATE TABLE metrics (
    checkpoint_id  INTEGER NOT NULL REFERENCES checkpoints(id) ON DELETE CASCADE,
    model_id       INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    name           TEXT    NOT NULL,
    split          TEXT    NOT NULL DEFAULT '',
    value          REAL    NOT NULL,
    created_at     TEXT    NOT NULL,
    PRIMARY KEY (checkpoint_id, name, split)
) WITHOUT ROWID;
-- `best` ranks checkpoints by one metric and split: over the registry, or model by model.
CREATE INDEX metrics_by_name ON metrics (name, split, value);
CREATE INDEX metrics_by_model ON metrics (model_id, name, split, value);

-- A training curve of a model (loss, accuracy, …), and its points by step. Points are keyed
-- by integers only, so bulk imports compare no text.
CREATE TABLE curves (
    id        INTEGER PRIMARY KEY,
    model_id  INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    name      TEXT    NOT NULL,
    UNIQUE (model_id, name)
);
CREATE TABLE curve_points (
    curve_id  INTEGER NOT NULL REFERENCES curves(id) ON DELETE CASCADE,
    step      INTEGER NOT NULL,
    value     REAL    NOT NULL,
    PRIMARY KEY (curve_id, step)
) WITHOUT ROWID;

-- A known weakness of a model (checkpoint_id NULL) or of one checkpoint. Every descendant
-- inherits it while it is open (resolved_at NULL).
CREATE TABLE advisories (
    id             TEXT    PRIMARY KEY,
    model_id       INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    checkpoint_id  INTEGER REFERENCES checkpoints(id) ON DELETE CASCADE,
    severity       TEXT    NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    note           TEXT,
    url            TEXT,
    created_at     TEXT    NOT NULL,
    resolved_at    TEXT
) WITHOUT ROWID;
CREATE INDEX advisories_open_by_model ON advisories (model_id) WHERE resolved_at IS NULL;
CREATE INDEX advisories_open_by_checkpoint ON advisories (checkpoint_id) WHERE resolved_at IS NULL;
