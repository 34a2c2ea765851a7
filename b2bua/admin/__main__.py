"""C{python -m b2bua.admin ...}: the same as the C{b2bua-admin} script."""

from b2bua.admin.cli import main

raise SystemExit(main())
