"""utils package (no work at import time)."""
