-- Graft registry schema (PostgreSQL), version 5: the transfer mode `adapter` (issue 25).
-- A shipped migration is never edited; later changes go in a new file.
ALTER TABLE models DROP CONSTRAINT models_transfer_mode_check;
ALTER TABLE models ADD CONSTRAINT models_transfer_mode_check
    CHECK (transfer_mode IS NULL OR transfer_mode IN ('feature-extraction', 'partial-finetune', 'full-finetune', 'adapter'));
