/*
 * packtrackctl's reading of packtrackd's answers, apart from its socket code so a
 * fuzz target (fuzz/fuzz_ctl_answer.c) drives it: the answer line is the server's,
 * but the tool must not crash, or print what the answer does not hold, whatever
 * bytes arrive.
 */
#ifndef PT_CTL_H
#define PT_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* packtrackctl's exit statuses (its manual lists them). */
enum { PT_CTL_EXIT_OK = 0, PT_CTL_EXIT_FAILED = 1, PT_CTL_EXIT_USAGE = 2, PT_CTL_EXIT_UNREACHABLE = 3 };

/* Prints packtrackd's answer (len bytes, not NUL-terminated, one JSON object) to the
 * command cmd (action: user's ban / unban / delete, else "") on out, and its error or
 * notice on err. json: the answer re-printed as one line of JSON. Returns
 * PT_CTL_EXIT_OK for an object with "ok": true, PT_CTL_EXIT_FAILED for one without,
 * PT_CTL_EXIT_UNREACHABLE (with a line on err) when the bytes are not one JSON object
 * (space, tab, CR and LF may follow it, nothing else; cJSON itself skips any byte up
 * to 0x20 before it). */
int pt_ctl_show(FILE *out, FILE *err, const char *cmd, const char *action, const char *answer, size_t len,
                bool json);

#endif
