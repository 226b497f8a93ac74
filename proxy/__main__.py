"""``python -m proxy`` is the ``splitway`` command."""

from proxy.cli import main

raise SystemExit(main())
