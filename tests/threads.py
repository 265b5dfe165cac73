"""Thread settings shared by tests that start CLI subprocesses."""


def same_threads() -> str:
    """OMP_NUM_THREADS for a CLI subprocess whose results a test compares with an in-process run: the thread count
    changes the order of float reductions, hence the last digits (1 under pytest -n, the default otherwise)."""
    import torch

    return str(torch.get_num_threads())
