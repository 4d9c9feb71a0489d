/* imgdiff.c - how far apart two images of the same size are, per 8-bit channel value: the largest and the
 * mean absolute difference (in 1/255) and the share of values within 1/255. For the accuracy figures of
 * README (e.g. --precision bf16 against f32).
 *
 *   sd-imgdiff A.png B.png
 */
#include "sd.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: sd-imgdiff A.png B.png\n");
        return 2;
    }
    sd_pixels a, b;
    char err[SD_ERR_LEN];
    if (sd_pixels_read(argv[1], &a, err) != SD_OK) {
        fprintf(stderr, "sd-imgdiff: error: %s\n", err);
        return 2;
    }
    if (sd_pixels_read(argv[2], &b, err) != SD_OK) {
        fprintf(stderr, "sd-imgdiff: error: %s\n", err);
        sd_pixels_free(&a);
        return 2;
    }
    int rc = 0;
    if (a.width != b.width || a.height != b.height || a.channels != b.channels) {
        fprintf(stderr, "sd-imgdiff: error: %s is %dx%dx%d, %s is %dx%dx%d\n", argv[1], a.width, a.height, a.channels,
                argv[2], b.width, b.height, b.channels);
        rc = 2;
    } else {
        size_t n = (size_t)a.width * a.height * a.channels, within1 = 0, sum = 0;
        int worst = 0;
        for (size_t i = 0; i < n; i++) {
            int d = abs((int)a.data[i] - (int)b.data[i]);
            sum += (size_t)d;
            within1 += d <= 1;
            if (d > worst) worst = d;
        }
        printf("max %d/255, mean %.3f/255, %.2f%% within 1/255 (%zu values)\n", worst, (double)sum / n,
               100.0 * within1 / n, n);
    }
    sd_pixels_free(&a);
    sd_pixels_free(&b);
    return rc;
}
