"""`python -m autoswarm.worker`: the `autoswarm worker` command itself (autoswarm.cli.worker_cmd),
the same options and help, for whatever starts a worker by module (`autoswarm up`, a benchmark, a
test).
"""

from autoswarm.cli.worker_cmd import main

if __name__ == "__main__":
    main()
