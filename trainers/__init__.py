"""trainers package (no work at import time)."""
