"""The kgexp subcommands, one module each: train, evaluate, predict, export, analyze, report."""
