"""Distil a student from an exported teacher: ``python distill.py experiment=<name> teacher=<path>``."""

from pockettts.cli.distill import main

if __name__ == "__main__":
    main()
