"""The `esrkit` command line: it parses options and calls the library; nothing in the library imports it.

Each command imports its implementation inside the command function (marked ``# lazy``), so ``esrkit --help``
and commands that need no model start without importing torch, transformers or the training stack.
"""
