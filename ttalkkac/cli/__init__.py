"""The ``ttalkkac`` command line (typer). It calls the domain core, never app/ or worker/ internals."""
