"""``python -m extract`` is the ``extract`` command."""

from extract.cli import main

raise SystemExit(main())
