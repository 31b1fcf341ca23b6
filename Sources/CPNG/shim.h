#ifndef AFA_CPNG_SHIM_H
#define AFA_CPNG_SHIM_H
#include <png.h>
#endif
