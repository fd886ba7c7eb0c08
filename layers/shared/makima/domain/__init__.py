"""The domain core: pure rules with no I/O and no AWS imports."""
