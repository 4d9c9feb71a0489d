/* prompt.h - AUTOMATIC1111's prompt syntax (modules/prompt_parser.py, parse_prompt_attention, emphasis
 * "Original"): (text) x1.1, [text] /1.1, (text:W), \( \) \[ \] \\ literal, BREAK. The prompt becomes a list of
 * spans of text with a weight; BREAK is the span ("BREAK", -1). Tokenizing and chunking are in conditioner.c. */
#ifndef SD_PROMPT_H
#define SD_PROMPT_H

typedef struct {
    char *text;     /* UTF-8, malloc'd */
    double weight;  /* product of the enclosing brackets' multipliers; -1 for BREAK */
} prompt_span;

typedef struct {
    prompt_span *spans;
    int n;
    int unclosed;   /* brackets still open at the end (closed there, as AUTOMATIC1111 does) */
} prompt_parse;

/* Parses text. Returns 0, or -1 without memory. */
int prompt_parse_text(const char *text, prompt_parse *out);
void prompt_parse_free(prompt_parse *p);
int prompt_span_is_break(const prompt_span *s);

#endif
