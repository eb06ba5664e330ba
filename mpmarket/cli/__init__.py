"""The click commands, one module each, which cli/main.py's group loads when they run."""
