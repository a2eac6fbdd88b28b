"""kgexp: knowledge-graph-embedding link-prediction experiments."""

import time

#: When kgexp was first imported: the start of a ``python -m kgexp`` process, for its start-up time.
IMPORTED_AT = time.perf_counter()
