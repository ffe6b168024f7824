"""``python -m flowkit``: the same as the ``flowkit`` command."""

import sys

from flowkit.models.llflow.cli import main

sys.exit(main())
