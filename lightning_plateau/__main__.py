"""``python -m lightning_plateau``: the ``lightning-plateau`` command."""

from lightning_plateau.cli import main

raise SystemExit(main())
