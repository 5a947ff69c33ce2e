"""mlplab's Hydra launcher plugin: ``hydra/launcher=population`` (see population_launcher)."""
