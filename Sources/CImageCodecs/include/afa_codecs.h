// Thin C layer over libpng and libjpeg: both report fatal errors by longjmp (libpng) or by calling
// an error_exit hook (libjpeg, default: exit()). Swift cannot host setjmp, so these wrappers catch
// every error here and return it as a message; they never exit and never crash on bad input.
#ifndef AFA_CODECS_H
#define AFA_CODECS_H

#include <stddef.h>
#include <stdint.h>

/// A decoded image: `channels` interleaved samples per pixel, 8 or 16 bits (16-bit samples are stored
/// as uint16_t in native byte order). For a palette PNG the samples are the palette indices
/// (channels = 1, is_palette = 1). Free `pixels` with afa_free.
typedef struct {
    int width;
    int height;
    int channels;
    int bit_depth;   // 8 or 16
    int is_palette;
    void *pixels;
} afa_decoded_image;

/// Returns 0 on success; otherwise writes a message into err (NUL-terminated) and returns -1, or -2
/// when the header declares more than max_pixels pixels (checked before any pixel buffer is allocated;
/// out->width and out->height then hold the declared size). max_pixels 0 means no limit.
int afa_png_decode(const uint8_t *data, size_t size, uint64_t max_pixels, afa_decoded_image *out, char *err, size_t err_size);

/// Encodes 8-bit pixels: channels 1 (grey), 3 (RGB) or 4 (RGBA); or, when palette != NULL, 1-channel
/// indices with a palette of palette_entries RGB triples. *out_data is malloc'ed (free with afa_free).
int afa_png_encode(const uint8_t *pixels, int width, int height, int channels,
                   const uint8_t *palette, int palette_entries,
                   uint8_t **out_data, size_t *out_size, char *err, size_t err_size);

/// Decodes a JPEG to 8-bit samples: 1 channel (greyscale), 3 (RGB from YCbCr/RGB) or 4 (CMYK/YCCK as
/// stored; `is_palette` is set to 2 when the CMYK values are Adobe-inverted).
int afa_jpeg_decode(const uint8_t *data, size_t size, uint64_t max_pixels, afa_decoded_image *out, char *err, size_t err_size);

/// Encodes 8-bit RGB (channels 3) or greyscale (channels 1) at quality 1–100.
int afa_jpeg_encode(const uint8_t *pixels, int width, int height, int channels, int quality, int progressive,
                    uint8_t **out_data, size_t *out_size, char *err, size_t err_size);

void afa_free(void *p);

#endif
