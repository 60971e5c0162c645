"""Figures: ``run_figures`` draws into one run directory (samples, confusion matrices,
reversed triggers, trigger previews); ``grid_figures`` draws a whole grid from its tidy
results table."""
