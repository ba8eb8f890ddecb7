"""Diagnostics and converters behind one command, ``pockettts-tools <sub-command>`` (also
``python -m pockettts.tools``): one module per sub-command, registered in ``__main__.SUBCOMMANDS``.
Each module's docstring is its help; it defines ``add_arguments(parser)`` and ``run(args) -> int``
and only parses arguments: the computing code lives in the library modules it calls."""
