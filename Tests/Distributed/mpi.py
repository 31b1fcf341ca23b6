"""How the tests and benchmarks start Open MPI jobs on this kind of machine."""
import os


def mpi_env():
    """The environment for mpirun: root allowed (containers), no cross-memory-attach single copy."""
    env = dict(os.environ)
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    # containers often forbid the cross-memory-attach single copy of the shared-memory transport
    env.setdefault("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
    return env


def mpirun(n, args):
    """`mpirun -np n` (more ranks than cores allowed) for the command `args`."""
    return ["mpirun", "-np", str(n), "--oversubscribe"] + args
