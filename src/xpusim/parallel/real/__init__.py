"""Real parallel runs on torch.distributed: the simulator's plans executed, timed and compared (``xpusim run``)."""
