-- Graft registry schema, version 4: each model's line of descent, materialized, so that the
-- lineage views read a subtree as one range of one index instead of walking edges.
-- A shipped migration is never edited; later changes go in a new file.

-- A student has exactly one parent edge (Graft never wrote more; now the schema says so).
CREATE UNIQUE INDEX model_parents_one_per_student ON model_parents (model_id);

-- A copy of the student's parent edge (model_parents stays the edge of record, with the
-- foreign keys), and its parent checkpoint's number: what a lineage view shows of each node.
-- All set once, when the model is created: a student's parent never changes.
ALTER TABLE models ADD COLUMN relation TEXT;
ALTER TABLE models ADD COLUMN parent_checkpoint_id INTEGER;
ALTER TABLE models ADD COLUMN parent_checkpoint_number INTEGER;
-- How many checkpoints the model has, kept by the triggers below.
ALTER TABLE models ADD COLUMN checkpoint_count INTEGER NOT NULL DEFAULT 0;
-- lineage_path: the ids from the root base down to the model itself, each followed by '/'
-- ('/12/' for base 12, '/12/345/' for its student 345). A model's subtree is the paths that
-- start with its own, one index range:
--     lineage_path >= P AND lineage_path < substr(P, 1, length(P) - 1) || '0'
-- ('0' sorts right after '/'); its ancestors are the ids in its path.
-- Last in the row: a deep model's path is long, and the columns before it are read without
-- following it into overflow pages.
ALTER TABLE models ADD COLUMN lineage_path TEXT NOT NULL DEFAULT '';

-- Fill them in for the models already there, from each base down.
WITH RECURSIVE walk(id, path) AS (
    SELECT id, '/' || id || '/' FROM models WHERE kind = 'base'
    UNION ALL
    SELECT p.model_id, walk.path || p.model_id || '/' FROM model_parents p JOIN walk ON p.parent_model_id = walk.id
)
UPDATE models SET lineage_path = walk.path FROM walk WHERE walk.id = models.id;

UPDATE models SET relation = p.relation, parent_checkpoint_id = p.parent_checkpoint_id, parent_checkpoint_number = c.number
FROM model_parents p JOIN checkpoints c ON c.id = p.parent_checkpoint_id WHERE p.model_id = models.id;

UPDATE models SET checkpoint_count = counts.n
FROM (SELECT model_id, count(*) AS n FROM checkpoints GROUP BY model_id) AS counts WHERE counts.model_id = models.id;

CREATE TRIGGER checkpoints_counted AFTER INSERT ON checkpoints BEGIN
    UPDATE models SET checkpoint_count = checkpoint_count + 1 WHERE id = NEW.model_id;
END;
CREATE TRIGGER checkpoints_uncounted AFTER DELETE ON checkpoints BEGIN
    UPDATE models SET checkpoint_count = checkpoint_count - 1 WHERE id = OLD.model_id;
END;

-- The index carries every column a lineage view reads, so a subtree of 10,000 models is read
-- without a lookup per model. (Paths are unique: each ends in the model's own id.)
CREATE INDEX models_by_lineage_path
    ON models (lineage_path, name, kind, transfer_mode, relation, parent_checkpoint_id, parent_checkpoint_number, checkpoint_count);
