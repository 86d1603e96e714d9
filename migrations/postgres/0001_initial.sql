-- Graft's metadata in PostgreSQL (issue 14): the SQLite schema of migrations 0001–0006 in one
-- step, in PostgreSQL's terms. Applied and checksummed by the PostgreSQL store's migration runner
-- (graft_migrations, as in SQLite). Differences from SQLite, each on purpose:
--
-- * Lineage is `lineage bigint[]`: the ids of the model's ancestors and itself, root first, under
--   a GIN index. A subtree is one GIN key (`lineage @> ARRAY[root]`); ancestors are the array's
--   ids. The SQLite store's text path cannot be indexed here at a 1,000-deep chain (a B-tree
--   entry must fit a third of a page), nor can ltree's GiST; `make bench-pg-lineage` measured
--   the array 2–4× faster than a recursive CTE (docs/BENCHMARKS.md).
-- * Metadata and manifest rules are jsonb; blob bytes are bytea; ids are identity columns.
-- * Text compares and sorts by bytes (COLLATE "C"), as in SQLite, whatever the database's locale:
--   names list in the same order from both stores, and digest prefixes are ranges of an index.
-- * Timestamps stay ISO 8601 text, as the SQLite store writes them, so both stores answer with
--   the same bytes.
-- * pending_blobs holds the upload protocol's announced blobs (in each server's memory with
--   SQLite), so a PUT may reach any of several servers.

CREATE TABLE models (
    id                        bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                      text COLLATE "C"    NOT NULL UNIQUE,
    kind                      text COLLATE "C"    NOT NULL CHECK (kind IN ('base', 'student')),
    description               text,
    source                    text,
    license                   text,
    dataset                   text,
    architecture              text,
    task                      text,
    metadata                  jsonb   NOT NULL DEFAULT '{}',
    created_at                text COLLATE "C"    NOT NULL,
    transfer_mode             text COLLATE "C"    CHECK (transfer_mode IS NULL OR transfer_mode IN ('feature-extraction', 'partial-finetune', 'full-finetune')),
    manifest_rules            jsonb,
    relation                  text COLLATE "C"    CHECK (relation IS NULL OR relation IN ('finetune', 'adapter', 'distillation', 'merge', 'quantized')),
    parent_checkpoint_id      bigint,
    parent_checkpoint_number  integer,
    checkpoint_count          integer NOT NULL DEFAULT 0,
    lineage                   bigint[] NOT NULL,
    CHECK ((kind = 'base') = (relation IS NULL))
);
CREATE INDEX models_by_lineage ON models USING gin (lineage);

CREATE TABLE blobs (
    digest       text COLLATE "C"   PRIMARY KEY CHECK (length(digest) = 64),
    byte_length  bigint NOT NULL CHECK (byte_length >= 0),
    inline_data  bytea  CHECK (inline_data IS NULL OR length(inline_data) = byte_length),
    created_at   text COLLATE "C"   NOT NULL
);

CREATE TABLE checkpoints (
    id               bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_id         bigint  NOT NULL REFERENCES models(id) ON DELETE RESTRICT,
    number           integer NOT NULL CHECK (number >= 1),
    digest           text COLLATE "C"    NOT NULL CHECK (length(digest) = 64),
    header           bytea   NOT NULL,
    header_digest    text COLLATE "C"    NOT NULL CHECK (length(header_digest) = 64),
    metadata         jsonb   NOT NULL DEFAULT '{}',
    tensor_count     integer NOT NULL,
    parameter_count  bigint  NOT NULL,
    data_bytes       bigint  NOT NULL,
    file_bytes       bigint  NOT NULL,
    step             bigint,
    epoch            bigint,
    created_at       text COLLATE "C"    NOT NULL,
    UNIQUE (model_id, number)
);
CREATE INDEX checkpoints_by_digest ON checkpoints (digest);
CREATE INDEX checkpoints_by_header ON checkpoints (header_digest);
ALTER TABLE models ADD FOREIGN KEY (parent_checkpoint_id) REFERENCES checkpoints(id) ON DELETE RESTRICT;

CREATE TABLE checkpoint_tensors (
    checkpoint_id  bigint  NOT NULL REFERENCES checkpoints(id) ON DELETE CASCADE,
    position       integer NOT NULL,
    name           text COLLATE "C"    NOT NULL,
    dtype          text COLLATE "C"    NOT NULL,
    shape          jsonb   NOT NULL,
    element_count  bigint  NOT NULL,
    byte_length    bigint  NOT NULL,
    blob_digest    text COLLATE "C"    NOT NULL REFERENCES blobs(digest),
    PRIMARY KEY (checkpoint_id, position),
    UNIQUE (checkpoint_id, name)
);
CREATE INDEX checkpoint_tensors_by_blob ON checkpoint_tensors (blob_digest);

CREATE TABLE model_parents (
    model_id              bigint NOT NULL UNIQUE REFERENCES models(id) ON DELETE CASCADE,
    parent_checkpoint_id  bigint NOT NULL REFERENCES checkpoints(id) ON DELETE RESTRICT,
    parent_model_id       bigint NOT NULL REFERENCES models(id) ON DELETE RESTRICT,
    relation              text COLLATE "C"   NOT NULL CHECK (relation IN ('finetune', 'adapter', 'distillation', 'merge', 'quantized')),
    created_at            text COLLATE "C"   NOT NULL,
    PRIMARY KEY (model_id, parent_checkpoint_id)
);
CREATE INDEX model_parents_by_parent_model ON model_parents (parent_model_id);
CREATE INDEX model_parents_by_parent_checkpoint ON model_parents (parent_checkpoint_id);

CREATE TABLE manifest_entries (
    model_id       bigint NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    tensor_name    text COLLATE "C"   NOT NULL,
    state          text COLLATE "C"   NOT NULL CHECK (state IN ('frozen', 'trainable', 'new', 'dropped')),
    dtype          text,
    shape          jsonb,
    element_count  bigint NOT NULL DEFAULT 0,
    parent_digest  text,
    CHECK ((state = 'new') = (parent_digest IS NULL)),
    PRIMARY KEY (model_id, tensor_name)
);

CREATE TABLE aliases (
    model_id       bigint NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    alias          text COLLATE "C"   NOT NULL,
    checkpoint_id  bigint NOT NULL REFERENCES checkpoints(id) ON DELETE RESTRICT,
    updated_at     text COLLATE "C"   NOT NULL,
    PRIMARY KEY (model_id, alias)
);
CREATE INDEX aliases_by_checkpoint ON aliases (checkpoint_id);

CREATE TABLE metrics (
    checkpoint_id  bigint           NOT NULL REFERENCES checkpoints(id) ON DELETE CASCADE,
    model_id       bigint           NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    name           text COLLATE "C"             NOT NULL,
    split          text COLLATE "C"             NOT NULL DEFAULT '',
    value          double precision NOT NULL,
    created_at     text COLLATE "C"             NOT NULL,
    PRIMARY KEY (checkpoint_id, name, split)
);
CREATE INDEX metrics_by_name ON metrics (name, split, value);
CREATE INDEX metrics_by_model ON metrics (model_id, name, split, value);

CREATE TABLE curves (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_id  bigint NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    name      text COLLATE "C"   NOT NULL,
    UNIQUE (model_id, name)
);
CREATE TABLE curve_points (
    curve_id  bigint           NOT NULL REFERENCES curves(id) ON DELETE CASCADE,
    step      bigint           NOT NULL,
    value     double precision NOT NULL,
    PRIMARY KEY (curve_id, step)
);

CREATE TABLE advisories (
    id             text COLLATE "C"   PRIMARY KEY,
    model_id       bigint NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    checkpoint_id  bigint REFERENCES checkpoints(id) ON DELETE CASCADE,
    severity       text COLLATE "C"   NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    note           text,
    url            text,
    created_at     text COLLATE "C"   NOT NULL,
    resolved_at    text
);
CREATE INDEX advisories_open_by_model ON advisories (model_id) WHERE resolved_at IS NULL;
CREATE INDEX advisories_open_by_checkpoint ON advisories (checkpoint_id) WHERE resolved_at IS NULL;

-- Per model, metric and split: max, min and count, kept by triggers on metrics; `lineage` is the
-- model's, so `best --under` reads one GIN key's rows for a metric.
CREATE TABLE metric_summaries (
    model_id   bigint           NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    name       text COLLATE "C"             NOT NULL,
    split      text COLLATE "C"             NOT NULL,
    lineage    bigint[]         NOT NULL,
    max_value  double precision NOT NULL,
    min_value  double precision NOT NULL,
    count      integer          NOT NULL CHECK (count > 0),
    PRIMARY KEY (model_id, name, split)
);
CREATE INDEX metric_summaries_by_name ON metric_summaries (name, split);
CREATE INDEX metric_summaries_by_lineage ON metric_summaries USING gin (lineage);

CREATE FUNCTION checkpoints_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE models SET checkpoint_count = checkpoint_count + 1 WHERE id = NEW.model_id;
        RETURN NEW;
    END IF;
    UPDATE models SET checkpoint_count = checkpoint_count - 1 WHERE id = OLD.model_id;
    RETURN OLD;
END $$;
CREATE TRIGGER checkpoints_counted AFTER INSERT OR DELETE ON checkpoints FOR EACH ROW EXECUTE FUNCTION checkpoints_counted();

CREATE FUNCTION metrics_summarised() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO metric_summaries (model_id, name, split, lineage, max_value, min_value, count)
        SELECT NEW.model_id, NEW.name, NEW.split, lineage, NEW.value, NEW.value, 1 FROM models WHERE id = NEW.model_id
        ON CONFLICT (model_id, name, split) DO UPDATE SET
            max_value = greatest(metric_summaries.max_value, excluded.max_value),
            min_value = least(metric_summaries.min_value, excluded.min_value),
            count = metric_summaries.count + 1;
        RETURN NEW;
    ELSIF TG_OP = 'UPDATE' THEN
        UPDATE metric_summaries SET
            max_value = (SELECT max(value) FROM metrics WHERE model_id = NEW.model_id AND name = NEW.name AND split = NEW.split),
            min_value = (SELECT min(value) FROM metrics WHERE model_id = NEW.model_id AND name = NEW.name AND split = NEW.split)
        WHERE model_id = NEW.model_id AND name = NEW.name AND split = NEW.split;
        RETURN NEW;
    END IF;
    -- Row triggers run after the whole statement (a checkpoint's cascade deletes several rows):
    -- the summary is recomputed from the rows left, and goes when none is.
    UPDATE metric_summaries s SET max_value = a.top, min_value = a.bottom, count = a.n
    FROM (SELECT max(value) AS top, min(value) AS bottom, count(*) AS n FROM metrics
          WHERE model_id = OLD.model_id AND name = OLD.name AND split = OLD.split) a
    WHERE s.model_id = OLD.model_id AND s.name = OLD.name AND s.split = OLD.split AND a.n > 0;
    DELETE FROM metric_summaries s WHERE s.model_id = OLD.model_id AND s.name = OLD.name AND s.split = OLD.split
        AND NOT EXISTS (SELECT 1 FROM metrics WHERE model_id = OLD.model_id AND name = OLD.name AND split = OLD.split);
    RETURN OLD;
END $$;
CREATE TRIGGER metrics_summarised AFTER INSERT OR DELETE OR UPDATE OF value ON metrics FOR EACH ROW EXECUTE FUNCTION metrics_summarised();

CREATE TABLE tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text COLLATE "C"   NOT NULL,
    secret_hash  bytea  NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    scope        text COLLATE "C"   NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    models       text,
    created_at   text COLLATE "C"   NOT NULL,
    revoked_at   text
);
CREATE UNIQUE INDEX tokens_active_name ON tokens (name) WHERE revoked_at IS NULL;

-- The upload protocol's announced blobs, shared by every server: a PUT is accepted for a blob
-- a live proposal announced, at most its length, until it expires.
CREATE TABLE pending_blobs (
    digest      text COLLATE "C"   PRIMARY KEY CHECK (length(digest) = 64),
    byte_length bigint NOT NULL CHECK (byte_length >= 0),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX pending_blobs_by_expiry ON pending_blobs (expires_at);

-- Settings of the registry as a whole, shared by every server: `blobs` is the blob location
-- `graft init --blobs` chose (absent: each server's local blobs/). Credentials are never stored.
CREATE TABLE graft_settings (
    key    text COLLATE "C" PRIMARY KEY,
    value  text COLLATE "C" NOT NULL
);
