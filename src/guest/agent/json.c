#include "json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------- writer ---------- */

void jb_init(struct jb *j, char *buf, size_t cap) {
  memset(j, 0, sizeof *j);
  j->buf = buf;
  j->cap = cap;
  if (cap > 0) buf[0] = '\0';
}

void jb_raw(struct jb *j, const char *s, size_t n) {
  if (j->overflow) return;
  if (n >= j->cap - j->len) { /* keep room for the NUL */
    j->overflow = true;
    return;
  }
  memcpy(j->buf + j->len, s, n);
  j->len += n;
  j->buf[j->len] = '\0';
}

/* Comma before a value or key, unless it directly follows a key or opens a container. */
static void jb_sep(struct jb *j) {
  if (j->after_key) {
    j->after_key = false;
    return;
  }
  if (j->depth > 0) {
    if (!j->first[j->depth]) jb_raw(j, ",", 1);
    j->first[j->depth] = false;
  }
}

static void jb_open(struct jb *j, char c) {
  jb_sep(j);
  jb_raw(j, &c, 1);
  if (j->depth < JB_MAX_DEPTH) {
    j->depth++;
    j->first[j->depth] = true;
  } else {
    j->overflow = true;
  }
}

static void jb_close(struct jb *j, char c) {
  jb_raw(j, &c, 1);
  if (j->depth > 0) j->depth--;
}

void jb_begin_obj(struct jb *j) { jb_open(j, '{'); }
void jb_end_obj(struct jb *j) { jb_close(j, '}'); }
void jb_begin_arr(struct jb *j) { jb_open(j, '['); }
void jb_end_arr(struct jb *j) { jb_close(j, ']'); }

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when it is not valid. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  size_t len;
  uint32_t cp;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
    cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (n < len) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3F);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return 0; /* overlong */
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

void jb_strn(struct jb *j, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)s;
  jb_sep(j);
  jb_raw(j, "\"", 1);
  size_t i = 0;
  while (i < n && !j->overflow) {
    unsigned char c = p[i];
    if (c == '"' || c == '\\') {
      char e[2] = {'\\', (char)c};
      jb_raw(j, e, 2);
      i++;
    } else if (c < 0x20 || c == 0x7F) {
      char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      switch (c) {
      case '\n': jb_raw(j, "\\n", 2); break;
      case '\r': jb_raw(j, "\\r", 2); break;
      case '\t': jb_raw(j, "\\t", 2); break;
      default: jb_raw(j, e, 6); break;
      }
      i++;
    } else if (c < 0x80) {
      /* copy a run of plain ASCII at once */
      size_t k = i;
      while (k < n && p[k] >= 0x20 && p[k] < 0x7F && p[k] != '"' && p[k] != '\\') k++;
      jb_raw(j, s + i, k - i);
      i = k;
    } else {
      size_t len = utf8_seq(p + i, n - i);
      if (len == 0) {
        jb_raw(j, "\\ufffd", 6);
        i++;
      } else {
        jb_raw(j, s + i, len);
        i += len;
      }
    }
  }
  jb_raw(j, "\"", 1);
}

void jb_str(struct jb *j, const char *s) { jb_strn(j, s, strlen(s)); }

void jb_key(struct jb *j, const char *k) {
  jb_strn(j, k, strlen(k));
  jb_raw(j, ":", 1);
  j->after_key = true;
}

void jb_u64(struct jb *j, uint64_t v) {
  char b[24];
  int n = snprintf(b, sizeof b, "%llu", (unsigned long long)v);
  jb_sep(j);
  jb_raw(j, b, (size_t)n);
}

void jb_i64(struct jb *j, int64_t v) {
  char b[24];
  int n = snprintf(b, sizeof b, "%lld", (long long)v);
  jb_sep(j);
  jb_raw(j, b, (size_t)n);
}

void jb_fixed2(struct jb *j, double v) {
  char b[48];
  if (!isfinite(v)) v = 0;
  int n = snprintf(b, sizeof b, "%.2f", v);
  jb_sep(j);
  jb_raw(j, b, (size_t)n);
}

void jb_bool(struct jb *j, bool v) {
  jb_sep(j);
  jb_raw(j, v ? "true" : "false", v ? 4 : 5);
}

void jb_null(struct jb *j) {
  jb_sep(j);
  jb_raw(j, "null", 4);
}

/* ---------- flat parser ---------- */

struct pz {
  const char *s;
  size_t n, i;
  char *err;
  size_t errcap;
};

static int pz_fail(struct pz *p, const char *what) {
  snprintf(p->err, p->errcap, "invalid JSON at byte %zu: %s", p->i, what);
  return -1;
}

static void pz_ws(struct pz *p) {
  while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\r' || p->s[p->i] == '\n'))
    p->i++;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int pz_hex4(struct pz *p, uint32_t *out) {
  if (p->n - p->i < 4) return pz_fail(p, "short \\u escape");
  uint32_t v = 0;
  for (int k = 0; k < 4; k++) {
    int h = hexval(p->s[p->i + (size_t)k]);
    if (h < 0) return pz_fail(p, "bad \\u escape");
    v = (v << 4) | (uint32_t)h;
  }
  p->i += 4;
  *out = v;
  return 0;
}

/* Append bytes to a bounded output; remembers truncation. */
static void put(char *out, size_t cap, size_t *len, bool *trunc, const char *b, size_t n) {
  if (*len + n >= cap) {
    *trunc = true;
    return;
  }
  memcpy(out + *len, b, n);
  *len += n;
  out[*len] = '\0';
}

static size_t utf8_encode(uint32_t cp, char *b) {
  if (cp < 0x80) {
    b[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    b[0] = (char)(0xC0 | (cp >> 6));
    b[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    b[0] = (char)(0xE0 | (cp >> 12));
    b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    b[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  b[0] = (char)(0xF0 | (cp >> 18));
  b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  b[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  b[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* Parse a string at p->i (which is at the opening quote) into out (bounded). */
static int pz_string(struct pz *p, char *out, size_t cap, bool *trunc) {
  size_t len = 0;
  *trunc = false;
  out[0] = '\0';
  p->i++; /* opening quote */
  for (;;) {
    if (p->i >= p->n) return pz_fail(p, "unterminated string");
    unsigned char c = (unsigned char)p->s[p->i];
    if (c == '"') {
      p->i++;
      return 0;
    }
    if (c < 0x20) return pz_fail(p, "control character in string");
    if (c != '\\') {
      char b = (char)c;
      put(out, cap, &len, trunc, &b, 1);
      p->i++;
      continue;
    }
    p->i++;
    if (p->i >= p->n) return pz_fail(p, "unterminated escape");
    char e = p->s[p->i++];
    char b[4];
    switch (e) {
    case '"': case '\\': case '/': b[0] = e; put(out, cap, &len, trunc, b, 1); break;
    case 'b': put(out, cap, &len, trunc, "\b", 1); break;
    case 'f': put(out, cap, &len, trunc, "\f", 1); break;
    case 'n': put(out, cap, &len, trunc, "\n", 1); break;
    case 'r': put(out, cap, &len, trunc, "\r", 1); break;
    case 't': put(out, cap, &len, trunc, "\t", 1); break;
    case 'u': {
      uint32_t cp;
      if (pz_hex4(p, &cp) < 0) return -1;
      if (cp >= 0xD800 && cp <= 0xDBFF && p->n - p->i >= 6 && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u') {
        size_t save = p->i;
        uint32_t lo;
        p->i += 2;
        if (pz_hex4(p, &lo) < 0) return -1;
        if (lo >= 0xDC00 && lo <= 0xDFFF) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        else p->i = save;
      }
      if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD; /* lone surrogate */
      put(out, cap, &len, trunc, b, utf8_encode(cp, b));
      break;
    }
    default: return pz_fail(p, "bad escape");
    }
  }
}

static int pz_number(struct pz *p, double *out) {
  size_t st = p->i;
  if (p->i < p->n && p->s[p->i] == '-') p->i++;
  if (p->i >= p->n) return pz_fail(p, "bad number");
  if (p->s[p->i] == '0') {
    p->i++;
  } else if (p->s[p->i] >= '1' && p->s[p->i] <= '9') {
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
  } else {
    return pz_fail(p, "bad number");
  }
  if (p->i < p->n && p->s[p->i] == '.') {
    p->i++;
    size_t d = p->i;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
    if (p->i == d) return pz_fail(p, "bad number");
  }
  if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
    p->i++;
    if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-')) p->i++;
    size_t d = p->i;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
    if (p->i == d) return pz_fail(p, "bad number");
  }
  char tmp[40];
  size_t len = p->i - st;
  if (len >= sizeof tmp) return pz_fail(p, "number too long");
  memcpy(tmp, p->s + st, len);
  tmp[len] = '\0';
  *out = strtod(tmp, NULL);
  return 0;
}

static bool pz_word(struct pz *p, const char *w) {
  size_t k = strlen(w);
  if (p->n - p->i >= k && memcmp(p->s + p->i, w, k) == 0) {
    p->i += k;
    return true;
  }
  return false;
}

int json_parse_flat(const char *s, size_t n, struct jreq *out, char *err, size_t errcap) {
  struct pz p = {s, n, 0, err, errcap};
  out->n = 0;
  pz_ws(&p);
  if (p.i >= n || s[p.i] != '{') return pz_fail(&p, "expected an object");
  p.i++;
  pz_ws(&p);
  if (p.i < n && s[p.i] == '}') {
    p.i++;
  } else {
    for (;;) {
      pz_ws(&p);
      if (p.i >= n || s[p.i] != '"') return pz_fail(&p, "expected a key");
      char key[JREQ_KEY_MAX];
      bool ktrunc;
      if (pz_string(&p, key, sizeof key, &ktrunc) < 0) return -1;
      pz_ws(&p);
      if (p.i >= n || s[p.i] != ':') return pz_fail(&p, "expected ':'");
      p.i++;
      pz_ws(&p);
      if (p.i >= n) return pz_fail(&p, "expected a value");

      struct jfield tmp;
      struct jfield *f = &tmp;
      /* duplicate keys: last one wins */
      for (int k = 0; k < out->n; k++)
        if (!ktrunc && strcmp(out->f[k].key, key) == 0) f = &out->f[k];
      if (f == &tmp && !ktrunc) {
        if (out->n >= JREQ_MAX_FIELDS) {
          snprintf(err, errcap, "too many fields (at most %d)", JREQ_MAX_FIELDS);
          return -1;
        }
        f = &out->f[out->n++];
      }
      memset(f, 0, sizeof *f);
      memcpy(f->key, key, sizeof key);

      char c = s[p.i];
      if (c == '"') {
        f->type = JT_STR;
        if (pz_string(&p, f->str, sizeof f->str, &f->truncated) < 0) return -1;
      } else if (c == '-' || (c >= '0' && c <= '9')) {
        f->type = JT_NUM;
        if (pz_number(&p, &f->num) < 0) return -1;
      } else if (pz_word(&p, "true")) {
        f->type = JT_BOOL;
        f->boolean = true;
      } else if (pz_word(&p, "false")) {
        f->type = JT_BOOL;
      } else if (pz_word(&p, "null")) {
        f->type = JT_NULL;
      } else if (c == '{' || c == '[') {
        snprintf(err, errcap, "field \"%.31s\": nested objects and arrays are not supported", key);
        return -1;
      } else {
        return pz_fail(&p, "unexpected character");
      }
      pz_ws(&p);
      if (p.i < n && s[p.i] == ',') {
        p.i++;
        continue;
      }
      if (p.i < n && s[p.i] == '}') {
        p.i++;
        break;
      }
      return pz_fail(&p, "expected ',' or '}'");
    }
  }
  pz_ws(&p);
  if (p.i != n) return pz_fail(&p, "trailing data after the object");
  return 0;
}

const struct jfield *jreq_get(const struct jreq *r, const char *key) {
  for (int k = 0; k < r->n; k++)
    if (strcmp(r->f[k].key, key) == 0) return &r->f[k];
  return NULL;
}

bool json_salvage_id(const char *s, size_t n, uint64_t *id) {
  static const char pat[] = "\"id\"";
  for (size_t i = 0; i + sizeof pat - 1 <= n; i++) {
    if (memcmp(s + i, pat, sizeof pat - 1) != 0) continue;
    size_t k = i + sizeof pat - 1;
    while (k < n && (s[k] == ' ' || s[k] == '\t')) k++;
    if (k >= n || s[k] != ':') continue;
    k++;
    while (k < n && (s[k] == ' ' || s[k] == '\t')) k++;
    if (k >= n || s[k] < '0' || s[k] > '9') continue;
    uint64_t v = 0;
    int digits = 0;
    while (k < n && s[k] >= '0' && s[k] <= '9' && digits < 16) {
      v = v * 10 + (uint64_t)(s[k] - '0');
      k++;
      digits++;
    }
    if (k < n && s[k] >= '0' && s[k] <= '9') continue; /* too long to be ours */
    *id = v;
    return true;
  }
  return false;
}
