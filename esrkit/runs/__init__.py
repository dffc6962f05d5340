"""Orchestration: what turns a RunConfig into trained and evaluated run folders, studies, sweeps and loaded
runs.

``train`` (one run, every seed), ``load_run`` (a trained run back in memory), studies (``study``,
``compare``), sweeps (``sweep``), figures that need trained models (``figures``) and ``recipe new``
(``scaffold``). This layer sits above the library (data ... training, reporting) and below serving and the
command line.
"""
