"""utils package (no work at import time): the infrastructure every layer shares, and the subpackages
``geometry``, ``render``, ``metrics`` and ``bench``, each with its own rule.

Imports allowed: none; a module here imports only other ``utils`` modules, never ``models``, ``datasets`` or
``trainers``.
"""
