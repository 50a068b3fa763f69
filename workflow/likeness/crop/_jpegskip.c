/*
 * likeness._jpegskip: decode only the rows and columns of a JPEG that a crop needs.
 *
 * libjpeg-turbo's jpeg_crop_scanline() limits the inverse DCT and colour conversion to the crop's
 * columns, jpeg_skip_scanlines() passes over the rows above it without reconstructing them, and the
 * decoder stops after the crop's last row, so the rows below are never even entropy-decoded. For a
 * face in a 24-megapixel photo that is a fraction of a whole decode.
 *
 * libjpeg reports fatal errors through error_exit(), which must not return: it longjmps back here.
 * Any error or warning (corrupt data) makes decode_rows() return None, and the caller falls back to
 * OpenCV's whole decode with its own checks.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

struct guarded_error {
    struct jpeg_error_mgr pub;
    jmp_buf escape;
};

static void escape_on_error(j_common_ptr cinfo) {
    struct guarded_error *err = (struct guarded_error *)cinfo->err;
    longjmp(err->escape, 1);
}

static void count_warnings_silently(j_common_ptr cinfo, int level) {
    if (level < 0) cinfo->err->num_warnings++;
}

struct decoded {
    unsigned char *pixels;
    JDIMENSION x_offset, width, height;
};

/* Returns 0 on success; the caller frees out->pixels. Runs without the GIL: touches no Python object. */
static int decode(const unsigned char *data, unsigned long size, JDIMENSION x0, JDIMENSION y0, JDIMENSION x1,
                  JDIMENSION y1, struct decoded *out) {
    struct jpeg_decompress_struct cinfo;
    struct guarded_error err;
    unsigned char *volatile pixels = NULL;

    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = escape_on_error;
    err.pub.emit_message = count_warnings_silently;
    if (setjmp(err.escape)) {
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, size);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&cinfo); /* OpenCV converts CMYK itself */
        return -1;
    }
    cinfo.out_color_space = JCS_EXT_BGR;
    jpeg_start_decompress(&cinfo);
    if (x1 > cinfo.output_width || y1 > cinfo.output_height || x0 >= x1 || y0 >= y1) {
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    JDIMENSION x_offset = x0, width = x1 - x0;
    jpeg_crop_scanline(&cinfo, &x_offset, &width); /* widened to the iMCU grid */
    if (y0 > 0 && jpeg_skip_scanlines(&cinfo, y0) != y0) longjmp(err.escape, 1);
    size_t stride = (size_t)width * 3;
    JDIMENSION height = y1 - y0;
    pixels = malloc(stride * height);
    if (!pixels) longjmp(err.escape, 1);
    while (cinfo.output_scanline < y1) {
        JSAMPROW row = pixels + stride * (cinfo.output_scanline - y0);
        if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) longjmp(err.escape, 1);
    }
    int warnings = (int)err.pub.num_warnings;
    jpeg_abort_decompress(&cinfo); /* the rows below the crop are never decoded */
    jpeg_destroy_decompress(&cinfo);
    if (warnings) {
        free(pixels);
        return -1;
    }
    out->pixels = pixels;
    out->x_offset = x_offset;
    out->width = width;
    out->height = height;
    return 0;
}

static PyObject *decode_rows(PyObject *self, PyObject *args) {
    Py_buffer data;
    unsigned int x0, y0, x1, y1;
    if (!PyArg_ParseTuple(args, "y*IIII", &data, &x0, &y0, &x1, &y1)) return NULL;
    struct decoded out;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = decode((const unsigned char *)data.buf, (unsigned long)data.len, x0, y0, x1, y1, &out);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    if (status != 0) Py_RETURN_NONE;
    PyObject *pixels = PyBytes_FromStringAndSize((const char *)out.pixels, (Py_ssize_t)out.width * 3 * out.height);
    free(out.pixels);
    if (!pixels) return NULL;
    return Py_BuildValue("(NIII)", pixels, out.x_offset, out.width, out.height);
}

static PyMethodDef methods[] = {
    {"decode_rows", decode_rows, METH_VARARGS,
     "decode_rows(data, x0, y0, x1, y1) -> (bgr bytes, x_offset, width, height) or None.\n\n"
     "Decodes the stored-pixel rows [y0, y1) of a JPEG, columns widened from [x0, x1) to the iMCU grid\n"
     "(x_offset, width); no EXIF orientation is applied. None on any decoder error or warning."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpegskip", NULL, -1, methods};

PyMODINIT_FUNC PyInit__jpegskip(void) { return PyModule_Create(&module); }
