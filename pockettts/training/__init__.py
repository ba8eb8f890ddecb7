"""Lightning modules, callbacks and the Hydra-driven run loop."""
