-- When each server entered its current status, written by the probe that changed it, so that a
-- server's health summary needs no scan of its probe history. Rows recorded before this column
-- existed stay NULL until their status next changes (the summary then reads the history).
ALTER TABLE server_health ADD COLUMN status_since timestamptz;
