// CBLAS and LAPACKE from OpenBLAS / Debian's liblapacke. Include paths come from pkg-config
// (`openblas`), because Debian installs cblas.h under an arch/variant directory.
#ifndef AFA_CBLAS_SHIM_H
#define AFA_CBLAS_SHIM_H
#include <cblas.h>
#include <lapacke.h>
#endif
