/*
 * The little JSON the guest agent needs: a bounded writer with correct string
 * escaping (invalid UTF-8 becomes U+FFFD), and a parser for flat request
 * objects whose values are strings, numbers, booleans or null.
 */
#ifndef BANGER_AGENT_JSON_H
#define BANGER_AGENT_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JB_MAX_DEPTH 16

/* Writer into a caller-owned buffer of fixed size; sets overflow instead of growing. */
struct jb {
  char *buf;
  size_t len, cap;
  bool overflow;
  int depth;
  bool after_key;
  bool first[JB_MAX_DEPTH + 1];
};

void jb_init(struct jb *j, char *buf, size_t cap);
void jb_raw(struct jb *j, const char *s, size_t n);
void jb_begin_obj(struct jb *j);
void jb_end_obj(struct jb *j);
void jb_begin_arr(struct jb *j);
void jb_end_arr(struct jb *j);
void jb_key(struct jb *j, const char *k);
void jb_str(struct jb *j, const char *s);
void jb_strn(struct jb *j, const char *s, size_t n);
void jb_u64(struct jb *j, uint64_t v);
void jb_i64(struct jb *j, int64_t v);
void jb_fixed2(struct jb *j, double v);
void jb_bool(struct jb *j, bool v);
void jb_null(struct jb *j);

/* Flat request objects. */
#define JREQ_MAX_FIELDS 16
#define JREQ_KEY_MAX 32
#define JREQ_STR_MAX 256

enum jtype { JT_STR, JT_NUM, JT_BOOL, JT_NULL };

struct jfield {
  char key[JREQ_KEY_MAX];
  enum jtype type;
  char str[JREQ_STR_MAX]; /* JT_STR, truncated to fit (see truncated) */
  bool truncated;
  double num;             /* JT_NUM */
  bool boolean;           /* JT_BOOL */
};

struct jreq {
  struct jfield f[JREQ_MAX_FIELDS];
  int n;
};

/* Parse one request line. Returns 0, or -1 with a one-line reason in err. */
int json_parse_flat(const char *s, size_t n, struct jreq *out, char *err, size_t errcap);
const struct jfield *jreq_get(const struct jreq *r, const char *key);
/* Best-effort: find a top-level-looking "id":<integer> in a (possibly cut) line. */
bool json_salvage_id(const char *s, size_t n, uint64_t *id);

#endif
