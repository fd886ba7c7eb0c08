-- Nothing to undo: the links removed were never valid, and the API would refuse to make them again.
SELECT 1;
