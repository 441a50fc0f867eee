import sys
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one torch thread: loops of many tiny ops only lose to thread
    contention on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
