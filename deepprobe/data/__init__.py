"""Streaming data sets for commands that run over many images (`robustness`, `evaluate DATA`).

    from deepprobe.data import open_dataset, select, from_tensors, run_dataset, Batch, Hooks
    dataset = select(open_dataset("imagenet/val", bundle.labels, bundle.num_classes), sample=5000, seed=0)
    outcome = run_dataset(dataset, process, batch_size=32, out="runs/x", config={...},
                          preprocess=bundle.preprocess, workers=4, ctx=distributed.init())

sources.py: DATA -> ordered items (folder tree / flat / manifest / tensors) and --limit/--sample;
classes.py: folder and manifest names -> class indices; loader.py: chunks streamed by DataLoader workers;
store.py: the resumable run folder (config fingerprint, part files, merge); runner.py: the loop;
stats.py: confidence intervals. Nothing here imports torch at module level.
"""
from .runner import Batch, Hooks, Outcome, item_seed, run_dataset
from .sources import FOLDERS, GIVEN, MANIFEST, PREDICTIONS, Dataset, Item, from_tensors, open_dataset, select
from .stats import mean_ci95, wilson

__all__ = ["Batch", "Dataset", "FOLDERS", "GIVEN", "Hooks", "Item", "MANIFEST", "Outcome", "PREDICTIONS",
           "from_tensors", "item_seed", "mean_ci95", "open_dataset", "run_dataset", "select", "wilson"]
