"""The project's base class of errors the user can fix, which the entry scripts report without a traceback.

``trainers.run.main_guard`` prints an :class:`InputError` (and the few other user-facing errors it lists in
``trainers.run.USER_ERRORS``) as one line and exits with status 2. Anything else, including a plain
``ValueError``, ``KeyError`` or ``OSError``, is a bug and keeps its traceback. So an error a user can
trigger with bad input (a config value, a data or checkpoint file, a MANO file, a command-line argument)
raises an ``InputError`` or one of its subclasses (``utils.config.ConfigError``,
``utils.checkpoint.CheckpointError``, ``utils.geometry.mano.HandModelError``,
``datasets.goliath_files.GoliathFormatError``, ...), with a message naming the key or file and the fix; a
check of how our own code calls a function (a tensor of the wrong shape) stays a ``ValueError``.

Imports nothing: every layer may raise these.
"""


class InputError(ValueError):
    """The user's input (config, data, checkpoint, MANO files, command line) is wrong; reported without a
    traceback.

    A ``ValueError``, so code (and tests) that caught the ``ValueError`` raised before still catch it.
    """
