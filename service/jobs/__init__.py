"""Background work: the job definitions, the leader-elected scheduler, the worker process and
the jobs' recorded state. The top domain: it may call every other one."""
