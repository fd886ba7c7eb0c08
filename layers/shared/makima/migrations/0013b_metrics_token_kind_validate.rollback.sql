-- Nothing to undo: a validated check stays valid; 0013's rollback puts the old check back.
SELECT 1;
