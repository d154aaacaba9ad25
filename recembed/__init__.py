"""recembed: click logs to item embeddings and nearest-neighbour indexes for candidate retrieval."""

import os

# faiss and numba each bring an OpenMP runtime; with spinning waits they starve each other on
# small machines (measured 5x slower faiss on 2 cores). Set before either library loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
