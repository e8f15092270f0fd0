"""``python -m macgpt.worker``: run one job's worker process (started by a supervisor)."""

import sys

from macgpt.worker.process import main

sys.exit(main())
