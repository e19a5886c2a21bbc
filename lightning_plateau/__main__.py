"""``python -m lightning_plateau``: the ``lightning-plateau`` command."""

from lightning_plateau.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
