"""Figures of a grid, drawn from its tidy results table: ``grid_figures`` chooses and draws them,
with ``heatmap``, ``defense``, ``frontier`` and ``roc`` figures beside it. One run's own
figures are drawn by the run engine (``triggerlab.run.figures``)."""
