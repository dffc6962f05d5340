"""The `esrkit` command line. The CLI calls the library; nothing in the library imports the CLI."""
