"""Background work: the job definitions, the leader-elected scheduler and their state."""
