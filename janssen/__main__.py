"""`python -m janssen`: the `janssen` command."""

import sys

from janssen.cli import main

sys.exit(main())
