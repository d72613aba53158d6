"""Studies over many runs: grids of cells (``sweep``, run by ``executors``), their tables
(``table``) and HTML report (``report``), and the demo (``demo``). They read runs only
through ``vicious.runs`` (``RunResult`` for metrics).
"""
