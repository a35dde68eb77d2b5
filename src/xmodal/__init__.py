"""xmodal: cross-modal (image <-> text) representation alignment and retrieval."""

import os

# numba's default "omp" threading layer shares libgomp with torch; after one parallel numba
# kernel, torch's own operations ran 10-30x slower in the same process. Its own work queue
# has no such interaction (set before numba is first imported; a user's choice wins).
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")

__version__ = "0.1.0"
