"""Operation runners behind the :mod:`popflow.engine.runner` port."""
