"""``python -m rmt`` runs the ``rmt`` command."""

from rmt.cli import main

raise SystemExit(main())
