-- Recurring meetings: how they repeat (JSON `Recurrence`, NULL for one-off
-- meetings) and when the last occurrence ends, which decides "upcoming".
ALTER TABLE meetings ADD COLUMN recurrence TEXT;
ALTER TABLE meetings ADD COLUMN series_ends_at BIGINT;
UPDATE meetings SET series_ends_at = ends_at;
