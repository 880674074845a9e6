"""models package (no work at import time)."""
