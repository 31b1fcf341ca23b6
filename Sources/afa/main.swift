import AFA
import AFACommandLine

// OpenBLAS chooses its kernel while it loads; switch to the fast one (by re-executing) before any
// BLAS work when it picked a generic kernel this CPU outgrows.
BLASKernel.reexecWithFastKernelIfNeeded()
Console.bootstrapLogging()
AFACommand.main()
