/* prompt.h - AUTOMATIC1111's prompt syntax (modules/prompt_parser.py, parse_prompt_attention, emphasis
 * "Original"): (text) x1.1, [text] /1.1, (text:W), \( \) \[ \] \\ literal, BREAK. The prompt becomes a list of
 * spans of text with a weight; BREAK is the span ("BREAK", -1). Tokenizing and chunking are in conditioner.c. */
#ifndef SD_PROMPT_H
#define SD_PROMPT_H

#include <stddef.h>

typedef struct {
    char *text;    /* UTF-8, malloc'd */
    double weight; /* product of the enclosing brackets' multipliers; -1 for BREAK */
} prompt_span;

typedef struct {
    prompt_span *spans;
    int n;
    int unclosed; /* brackets still open at the end (closed there, as AUTOMATIC1111 does) */
} prompt_parse;

/* AUTOMATIC1111's extra-network tag at or after s, `<(\w+):([^>]+)>` (modules/extra_networks.py): returns its
 * '<' and sets the kind ("lora") and argument ("name:0.8") ranges and the tag's length; NULL when none. */
const char *prompt_next_tag(const char *s, const char **kind, size_t *kind_len, const char **args, size_t *args_len,
                            size_t *tag_len);

/* Parses text (extra-network tags removed first, as AUTOMATIC1111 does). Returns 0, or -1 without memory. */
int prompt_parse_text(const char *text, prompt_parse *out);
void prompt_parse_free(prompt_parse *p);
int prompt_span_is_break(const prompt_span *s);

#endif
