"""The ``cinedub`` command line (typer): the application layer above the core (:mod:`cinedub`) and the Prefect
flows (:mod:`flows`). The core never imports it."""
