"""Scale-out: parallel plans, schedules as data, memory and communication models, the discrete-event simulator
and the plan search (``xpusim parallel``)."""
