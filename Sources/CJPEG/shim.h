#ifndef AFA_CJPEG_SHIM_H
#define AFA_CJPEG_SHIM_H
#include <stdio.h>
#include <stddef.h>
#include <jpeglib.h>
#endif
