"""The real worker, with RLIMIT_FSIZE set first: no file it writes may grow past LIMIT_BYTES, so
checkpoint writes fail the way they fail on a full disk (the write raises, nothing is killed)."""

import os
import resource
import sys

limit = int(os.environ["LIMIT_BYTES"])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

from macgpt.worker.process import main  # noqa: E402

sys.exit(main())
