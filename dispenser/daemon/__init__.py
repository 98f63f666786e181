"""dispenserd: the daemon that runs the dispensing machine (composition root in ``app``)."""
