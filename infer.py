"""Speak text in a voice: ``python infer.py checkpoint=<model> text="..." voice=<wav|state> out=<wav>``."""

from pockettts.cli.infer import main

if __name__ == "__main__":
    main()
