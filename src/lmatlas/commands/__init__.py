"""One module per ``lmatlas`` subcommand; see ``lmatlas.cli``."""
