"""``python -m mpmarket``: the same as the ``mpmarket`` command."""

from mpmarket.cli.main import main

if __name__ == "__main__":
    main()
