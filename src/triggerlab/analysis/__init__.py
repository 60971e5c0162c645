"""Analysis of finished runs: results tables, statistics, figures and the report. It reads run
and grid directories only; it never trains, loads a dataset or imports torch."""
