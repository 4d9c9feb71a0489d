/* unicode.c - see unicode.h. */
#include "text/unicode.h"

#include "text/unicode_tables.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

long utf8_decode(const char *str, size_t len, uint32_t *cps, size_t *bad_offset) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    long n = 0;
    while (i < len) {
        unsigned c = s[i];
        uint32_t cp, min;
        int extra;
        if (c < 0x80) {
            cp = c;
            extra = 0;
            min = 0;
        } else if ((c & 0xE0) == 0xC0) {
            cp = c & 0x1F;
            extra = 1;
            min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            cp = c & 0x0F;
            extra = 2;
            min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            cp = c & 0x07;
            extra = 3;
            min = 0x10000;
        } else {
            *bad_offset = i;
            return -1;
        }
        for (int k = 1; k <= extra; k++) {
            if (i + (size_t)k >= len || (s[i + k] & 0xC0) != 0x80) {
                *bad_offset = i;
                return -1;
            }
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            *bad_offset = i;
            return -1;
        }
        cps[n++] = cp;
        i += (size_t)extra + 1;
    }
    return n;
}

int utf8_encode(uint32_t cp, unsigned char *out) {
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

static int in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0])
            hi = mid;
        else if (cp > r[mid][1])
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}

int uni_is_letter(uint32_t cp) {
    if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
    return in_ranges(uni_letter_ranges, COUNT(uni_letter_ranges), cp);
}

int uni_is_number(uint32_t cp) {
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    return in_ranges(uni_number_ranges, COUNT(uni_number_ranges), cp);
}

int uni_is_space(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

int uni_lower(uint32_t cp, uint32_t out[2]) {
    if (cp < 0x80) {
        out[0] = (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
        return 1;
    }
    for (size_t i = 0; i < COUNT(uni_lower_long); i++)
        if (uni_lower_long[i][0] == cp) {
            out[0] = uni_lower_long[i][1];
            out[1] = uni_lower_long[i][2];
            return 2;
        }
    size_t lo = 0, hi = COUNT(uni_lower_pairs);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < uni_lower_pairs[mid][0])
            hi = mid;
        else if (cp > uni_lower_pairs[mid][0])
            lo = mid + 1;
        else {
            out[0] = uni_lower_pairs[mid][1];
            return 1;
        }
    }
    out[0] = cp;
    return 1;
}

uint32_t uni_compose_pair(uint32_t a, uint32_t b) {
    size_t lo = 0, hi = COUNT(uni_compose);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const uint32_t *e = uni_compose[mid];
        if (a < e[0] || (a == e[0] && b < e[1]))
            hi = mid;
        else if (a > e[0] || b > e[1])
            lo = mid + 1;
        else
            return e[2];
    }
    return 0;
}
