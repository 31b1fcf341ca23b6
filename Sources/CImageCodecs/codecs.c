#include "afa_codecs.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>

void afa_free(void *p) { free(p); }

static void set_err(char *err, size_t n, const char *msg) {
    if (err && n > 0) { snprintf(err, n, "%s", msg); }
}

/* ---------------------------------------------------------------- PNG */

typedef struct {
    const uint8_t *data;
    size_t size;
    size_t pos;
} png_reader;

typedef struct {
    char *err;
    size_t err_size;
} png_err_ctx;

static void png_error_fn(png_structp png, png_const_charp msg) {
    png_err_ctx *ctx = (png_err_ctx *)png_get_error_ptr(png);
    if (ctx) set_err(ctx->err, ctx->err_size, msg);
    png_longjmp(png, 1);
}

static void png_warning_fn(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

static void png_read_fn(png_structp png, png_bytep out, png_size_t n) {
    png_reader *r = (png_reader *)png_get_io_ptr(png);
    if (r->pos + n > r->size) png_error(png, "unexpected end of file (truncated PNG)");
    memcpy(out, r->data + r->pos, n);
    r->pos += n;
}

int afa_png_decode(const uint8_t *data, size_t size, uint64_t max_pixels, afa_decoded_image *out, char *err, size_t err_size) {
    memset(out, 0, sizeof(*out));
    if (size < 8 || png_sig_cmp(data, 0, 8) != 0) {
        set_err(err, err_size, "not a PNG file (bad signature)");
        return -1;
    }
    /* The size declared by IHDR (always the first chunk), read before libpng buffers anything: an oversized
       image is refused as such even when the rest of the file is missing or damaged. */
    if (max_pixels && size >= 24 && memcmp(data + 12, "IHDR", 4) == 0) {
        uint64_t dw = (uint64_t)data[16] << 24 | (uint64_t)data[17] << 16 | (uint64_t)data[18] << 8 | data[19];
        uint64_t dh = (uint64_t)data[20] << 24 | (uint64_t)data[21] << 16 | (uint64_t)data[22] << 8 | data[23];
        if (dw * dh > max_pixels) {
            snprintf(err, err_size, "image of %llux%llu pixels is over the limit of %llu pixels", (unsigned long long)dw,
                     (unsigned long long)dh, (unsigned long long)max_pixels);
            out->width = dw > INT32_MAX ? INT32_MAX : (int)dw;
            out->height = dh > INT32_MAX ? INT32_MAX : (int)dh;
            return -2;
        }
    }
    png_err_ctx ctx = {err, err_size};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, png_error_fn, png_warning_fn);
    if (!png) { set_err(err, err_size, "out of memory"); return -1; }
    png_infop info = png_create_info_struct(png);
    if (!info) { png_destroy_read_struct(&png, NULL, NULL); set_err(err, err_size, "out of memory"); return -1; }
    png_reader reader = {data, size, 0};
    uint8_t *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        free(pixels);
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    png_set_read_fn(png, &reader, png_read_fn);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
    if (w == 0 || h == 0 || w > 65535 || h > 65535) png_error(png, "image size out of range");
    if (max_pixels && (uint64_t)w * h > max_pixels) {
        snprintf(err, err_size, "image of %ux%u pixels is over the limit of %llu pixels", (unsigned)w, (unsigned)h,
                 (unsigned long long)max_pixels);
        png_destroy_read_struct(&png, &info, NULL);
        out->width = (int)w; out->height = (int)h;
        return -2;
    }
    int is_palette = color == PNG_COLOR_TYPE_PALETTE;
    if (depth < 8) png_set_packing(png);                      // 1/2/4-bit samples to one byte each
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8 && !is_palette) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_swap(png);                        // to little-endian (native here)
    if (png_get_interlace_type(png, info) != PNG_INTERLACE_NONE) png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int channels = png_get_channels(png, info);
    int out_depth = depth == 16 ? 16 : 8;
    size_t rowbytes = png_get_rowbytes(png, info);
    pixels = (uint8_t *)malloc(rowbytes * h);
    rows = (png_bytep *)malloc(sizeof(png_bytep) * h);
    if (!pixels || !rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < h; y++) rows[y] = pixels + y * rowbytes;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    out->width = (int)w; out->height = (int)h; out->channels = channels; out->bit_depth = out_depth;
    out->is_palette = is_palette; out->pixels = pixels;
    return 0;
}

typedef struct {
    uint8_t *data;
    size_t size, cap;
} png_writer;

static void png_write_fn(png_structp png, png_bytep in, png_size_t n) {
    png_writer *w = (png_writer *)png_get_io_ptr(png);
    if (w->size + n > w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 65536;
        while (cap < w->size + n) cap *= 2;
        uint8_t *d = (uint8_t *)realloc(w->data, cap);
        if (!d) png_error(png, "out of memory");
        w->data = d; w->cap = cap;
    }
    memcpy(w->data + w->size, in, n);
    w->size += n;
}

static void png_flush_fn(png_structp png) { (void)png; }

int afa_png_encode(const uint8_t *pixels, int width, int height, int channels, const uint8_t *palette,
                   int palette_entries, uint8_t **out_data, size_t *out_size, char *err, size_t err_size) {
    *out_data = NULL; *out_size = 0;
    int color;
    if (palette) {
        if (channels != 1 || palette_entries < 1 || palette_entries > 256) { set_err(err, err_size, "palette PNG needs 1 channel and 1-256 colours"); return -1; }
        color = PNG_COLOR_TYPE_PALETTE;
    } else if (channels == 1) color = PNG_COLOR_TYPE_GRAY;
    else if (channels == 3) color = PNG_COLOR_TYPE_RGB;
    else if (channels == 4) color = PNG_COLOR_TYPE_RGBA;
    else { set_err(err, err_size, "PNG encode: channels must be 1, 3 or 4"); return -1; }
    png_err_ctx ctx = {err, err_size};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, png_error_fn, png_warning_fn);
    if (!png) { set_err(err, err_size, "out of memory"); return -1; }
    png_infop info = png_create_info_struct(png);
    png_writer writer = {NULL, 0, 0};
    if (!info || setjmp(png_jmpbuf(png))) {
        free(writer.data);
        png_destroy_write_struct(&png, &info);
        if (!info) set_err(err, err_size, "out of memory");
        return -1;
    }
    png_set_write_fn(png, &writer, png_write_fn, png_flush_fn);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, color, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (palette) {
        png_color pal[256];
        for (int i = 0; i < palette_entries; i++) {
            pal[i].red = palette[3 * i]; pal[i].green = palette[3 * i + 1]; pal[i].blue = palette[3 * i + 2];
        }
        png_set_PLTE(png, info, pal, palette_entries);
    }
    png_write_info(png, info);
    for (int y = 0; y < height; y++) png_write_row(png, (png_const_bytep)(pixels + (size_t)y * width * channels));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    *out_data = writer.data; *out_size = writer.size;
    return 0;
}

/* ---------------------------------------------------------------- JPEG */

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char *err;
    size_t err_size;
} jpeg_err_ctx;

static void jpeg_error_exit_fn(j_common_ptr cinfo) {
    jpeg_err_ctx *ctx = (jpeg_err_ctx *)cinfo->err;
    char buf[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, buf);
    set_err(ctx->err, ctx->err_size, buf);
    longjmp(ctx->jump, 1);
}

static void jpeg_output_message_fn(j_common_ptr cinfo) { (void)cinfo; }   // warnings stay quiet

/* A progressive JPEG may hold any number of scans, each one a pass over every coefficient: a few
   kilobytes of tiny scans can keep the decoder busy for minutes. Real encoders write about ten;
   refuse files with more than this many (libjpeg-turbo's tools offer the same limit as -maxscans). */
#define AFA_JPEG_MAX_SCANS 500

static void jpeg_progress_fn(j_common_ptr common) {
    if (common->is_decompressor) {
        j_decompress_ptr cinfo = (j_decompress_ptr)common;
        if (cinfo->is_decompressor && cinfo->input_scan_number > AFA_JPEG_MAX_SCANS) {
            jpeg_err_ctx *ctx = (jpeg_err_ctx *)cinfo->err;
            if (ctx->err && ctx->err_size) snprintf(ctx->err, ctx->err_size, "progressive JPEG with more than %d scans (a decompression bomb)", AFA_JPEG_MAX_SCANS);
            longjmp(ctx->jump, 1);
        }
    }
}

int afa_jpeg_decode(const uint8_t *data, size_t size, uint64_t max_pixels, afa_decoded_image *out, char *err, size_t err_size) {
    memset(out, 0, sizeof(*out));
    if (size < 3 || data[0] != 0xFF || data[1] != 0xD8) { set_err(err, err_size, "not a JPEG file (no SOI marker)"); return -1; }
    struct jpeg_decompress_struct cinfo;
    jpeg_err_ctx ctx;
    cinfo.err = jpeg_std_error(&ctx.pub);
    ctx.pub.error_exit = jpeg_error_exit_fn;
    ctx.pub.output_message = jpeg_output_message_fn;
    ctx.err = err; ctx.err_size = err_size;
    uint8_t *volatile pixels = NULL;
    if (setjmp(ctx.jump)) {
        free(pixels);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    struct jpeg_progress_mgr progress = { .progress_monitor = jpeg_progress_fn };
    cinfo.progress = &progress;
    jpeg_mem_src(&cinfo, (unsigned char *)data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    if (max_pixels && (uint64_t)cinfo.image_width * cinfo.image_height > max_pixels) {
        snprintf(err, err_size, "image of %ux%u pixels is over the limit of %llu pixels", (unsigned)cinfo.image_width,
                 (unsigned)cinfo.image_height, (unsigned long long)max_pixels);
        out->width = (int)cinfo.image_width; out->height = (int)cinfo.image_height;
        jpeg_destroy_decompress(&cinfo);
        return -2;
    }
    int inverted = 0;
    switch (cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE: cinfo.out_color_space = JCS_GRAYSCALE; break;
    case JCS_CMYK: case JCS_YCCK:
        cinfo.out_color_space = JCS_CMYK;
        inverted = cinfo.saw_Adobe_marker;
        break;
    default: cinfo.out_color_space = JCS_RGB; break;
    }
    jpeg_start_decompress(&cinfo);
    int w = (int)cinfo.output_width, h = (int)cinfo.output_height, c = cinfo.output_components;
    pixels = (uint8_t *)malloc((size_t)w * h * c);
    if (!pixels) { set_err(err, err_size, "out of memory"); jpeg_destroy_decompress(&cinfo); return -1; }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = pixels + (size_t)cinfo.output_scanline * w * c;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    out->width = w; out->height = h; out->channels = c; out->bit_depth = 8;
    out->is_palette = (c == 4 && inverted) ? 2 : 0;
    out->pixels = pixels;
    return 0;
}

int afa_jpeg_encode(const uint8_t *pixels, int width, int height, int channels, int quality, int progressive,
                    uint8_t **out_data, size_t *out_size, char *err, size_t err_size) {
    *out_data = NULL; *out_size = 0;
    if (channels != 1 && channels != 3) { set_err(err, err_size, "JPEG encode: channels must be 1 or 3"); return -1; }
    struct jpeg_compress_struct cinfo;
    jpeg_err_ctx ctx;
    cinfo.err = jpeg_std_error(&ctx.pub);
    ctx.pub.error_exit = jpeg_error_exit_fn;
    ctx.pub.output_message = jpeg_output_message_fn;
    ctx.err = err; ctx.err_size = err_size;
    unsigned char *volatile mem = NULL;
    unsigned long mem_size = 0;
    if (setjmp(ctx.jump)) {
        jpeg_destroy_compress(&cinfo);
        free(mem);
        return -1;
    }
    jpeg_create_compress(&cinfo);
    jpeg_mem_dest(&cinfo, (unsigned char **)&mem, &mem_size);
    cinfo.image_width = (JDIMENSION)width; cinfo.image_height = (JDIMENSION)height;
    cinfo.input_components = channels;
    cinfo.in_color_space = channels == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality, TRUE);
    if (progressive) jpeg_simple_progression(&cinfo);
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = (JSAMPROW)(pixels + (size_t)cinfo.next_scanline * width * channels);
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    *out_data = mem; *out_size = mem_size;
    return 0;
}
