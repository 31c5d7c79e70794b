"""``python -m dfs`` is the ``dfs`` command."""

import sys

from dfs.cli.main import main

sys.exit(main())
