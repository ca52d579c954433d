"""Shared test setup."""

from __future__ import annotations

import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_fresh_params():
    """Tiny models: intra-op threads only add wake-up stalls on a shared 2-core CPU; and
    every test starts seeded, with an empty Pyro param store."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pyro.clear_param_store()
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
    pyro.clear_param_store()
