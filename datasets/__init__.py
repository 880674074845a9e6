"""datasets package (no work at import time)."""
