"""Writing benchmark reports: what every markdown report shares (markdown.py:
the machine, the commit measured, CPU columns) and loadtests.compare's tables,
summaries and plots (compare.py). The other benchmarks write their own short
tables beside their runs."""
