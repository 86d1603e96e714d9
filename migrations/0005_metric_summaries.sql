-- Graft registry schema, version 5: each model's best values per metric, by lineage path, so
-- that `best --under` reads a subtree's candidates as one index range.
-- A shipped migration is never edited; later changes go in a new file.

-- Per model, metric and split: the highest and lowest value over its checkpoints and how many
-- checkpoints have the metric. Kept by the triggers below; lineage_path is the model's (it
-- never changes), so the index below orders a metric's summaries by subtree.
CREATE TABLE metric_summaries (
    model_id      INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    name          TEXT    NOT NULL,
    split         TEXT    NOT NULL,
    lineage_path  TEXT    NOT NULL,
    max_value     REAL    NOT NULL,
    min_value     REAL    NOT NULL,
    count         INTEGER NOT NULL CHECK (count > 0),
    PRIMARY KEY (model_id, name, split)
) WITHOUT ROWID;

INSERT INTO metric_summaries (model_id, name, split, lineage_path, max_value, min_value, count)
SELECT mt.model_id, mt.name, mt.split, m.lineage_path, max(mt.value), min(mt.value), count(*)
FROM metrics mt JOIN models m ON m.id = mt.model_id GROUP BY mt.model_id, mt.name, mt.split;

-- A metric's summaries under a model: name, split and a lineage-path range; covering.
CREATE INDEX metric_summaries_by_subtree ON metric_summaries (name, split, lineage_path, max_value, min_value, count);

CREATE TRIGGER metrics_summarised AFTER INSERT ON metrics BEGIN
    INSERT INTO metric_summaries (model_id, name, split, lineage_path, max_value, min_value, count)
    SELECT NEW.model_id, NEW.name, NEW.split, lineage_path, NEW.value, NEW.value, 1 FROM models WHERE id = NEW.model_id
    ON CONFLICT (model_id, name, split) DO UPDATE SET
        max_value = max(max_value, excluded.max_value), min_value = min(min_value, excluded.min_value), count = count + 1;
END;

-- A value replaced (metric log on a checkpoint that had it): the extremes are recomputed from
-- the model's rows of that metric, two seeks in metrics_by_model.
CREATE TRIGGER metrics_resummarised AFTER UPDATE OF value ON metrics BEGIN
    UPDATE metric_summaries SET
        max_value = (SELECT max(value) FROM metrics WHERE model_id = NEW.model_id AND name = NEW.name AND split = NEW.split),
        min_value = (SELECT min(value) FROM metrics WHERE model_id = NEW.model_id AND name = NEW.name AND split = NEW.split)
    WHERE model_id = NEW.model_id AND name = NEW.name AND split = NEW.split;
END;

-- A checkpoint removed (its metrics go with it): the last one of a metric removes the summary.
CREATE TRIGGER metrics_unsummarised AFTER DELETE ON metrics BEGIN
    DELETE FROM metric_summaries WHERE model_id = OLD.model_id AND name = OLD.name AND split = OLD.split AND count = 1;
    UPDATE metric_summaries SET
        max_value = (SELECT max(value) FROM metrics WHERE model_id = OLD.model_id AND name = OLD.name AND split = OLD.split),
        min_value = (SELECT min(value) FROM metrics WHERE model_id = OLD.model_id AND name = OLD.name AND split = OLD.split),
        count = count - 1
    WHERE model_id = OLD.model_id AND name = OLD.name AND split = OLD.split;
END;
