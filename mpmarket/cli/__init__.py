"""The click commands: parse, call, print."""
