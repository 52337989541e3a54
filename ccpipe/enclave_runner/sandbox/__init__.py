"""Run a workload from its unpacked root with bubblewrap, bounded in time, resources and output.

Read along one run:

1. :mod:`.spec`: what to run, from the image config (:func:`~.spec.run_spec`): the user
   (``uid[:gid]``, or names looked up in the image's own ``/etc/passwd`` and ``/etc/group``),
   workdir, environment, entrypoint + cmd.
2. :mod:`.bwrap`: the sandbox itself (:func:`~.bwrap.bwrap_argv`, pure): the unpacked root,
   read-only, as ``/``; a private ``/proc``, a minimal ``/dev`` and a private tmpfs ``/tmp``;
   ``--unshare-all`` (the network namespace is shared only when the workload asks for it);
   ``--clearenv`` (nothing of the runner's own environment leaks), every capability dropped, a
   new session (no terminal injection), ``--die-with-parent``.
3. :mod:`.host_user`: a root runner hands the root to a fresh unprivileged host uid per launch,
   so the sandbox holds no host privilege.
4. :mod:`.limits` and :mod:`.cgroups`: rlimits set in the child before ``bwrap`` executes (CPU
   seconds, address space, open files, processes, file size, no core), plus a per-run pids
   cgroup (the kernel does not apply RLIMIT_NPROC to root) and memory cgroup (the limit holds
   for all the sandbox's processes together), on cgroup v2 in a subtree delegated to the runner
   or else on v1, per controller as :mod:`.cgroupfs` finds them. A sandbox that cannot be
   bounded so is refused unless best-effort limits are configured.
5. :mod:`.run`: start, supervise (a wall-clock timeout kills the whole process group), collect
   the output through :mod:`.output` (stdout and stderr in one pipe, so their order is kept, in
   a bounded log that says how much it dropped), and report the exit code, the duration and the
   SHA-256 of the log exactly as kept.

Imports the runner's own modules only; no NATS.
"""
