"""``python -m praxis_grpc`` runs the ``praxis`` CLI."""

import sys

from praxis_grpc.cli import main

sys.exit(main())
