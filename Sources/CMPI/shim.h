// Open MPI for Swift. Open MPI defines its handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, ...) as
// macros that take the address of library globals, which Swift cannot import; these functions
// return them. Everything else (MPI_Init_thread, MPI_Allreduce, ...) is imported as declared.
#include <mpi.h>

static inline MPI_Comm afa_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype afa_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype afa_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Datatype afa_mpi_uint64(void) { return MPI_UINT64_T; }
static inline MPI_Datatype afa_mpi_byte(void) { return MPI_BYTE; }
static inline MPI_Op afa_mpi_sum(void) { return MPI_SUM; }
static inline int afa_mpi_success(void) { return MPI_SUCCESS; }
static inline int afa_mpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
static inline int afa_mpi_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
static inline MPI_Errhandler afa_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline void *afa_mpi_in_place(void) { return MPI_IN_PLACE; }
