"""Figures of a grid, drawn from its tidy results table: ``grid_figures`` chooses and draws them,
with ``heatmap``, ``defense``, ``frontier`` and ``roc`` figures beside it. Figures of image
tensors (one run's samples, trigger previews) are in ``triggerlab.figures``."""
