#!/usr/bin/python3
"""tlgen: turns the PackTrack TL schema into C codecs.

    tlgen.py SCHEMA OUTDIR      writes OUTDIR/pt_tl.h and OUTDIR/pt_tl.c

The schema file's header comment is the language definition. In short:
    // @family NAME
    name#hexid field:type ... = Result;
where an omitted #id is the CRC32 of the declaration normalised the way TL does
it: no id, single spaces, `bytes` field types spelled `string`, `<` turned into
a space and `>` dropped ("msgs_ack msg_ids:Vector long = MsgsAck").

Any problem with the schema is reported as FILE:LINE: error: ... on stderr with
exit status 1, and nothing is written. Standard library only.
"""
import os
import re
import sys
import textwrap
import zlib

NAME_RE = r"[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)?"
FIELD_RE = r"[A-Za-z][A-Za-z0-9_]*"
FAMILY_RE = r"[a-z][a-z0-9_]*"

# Built-in TL types: minimum encoded size, C type, array suffix, reader, writer.
PRIMS = {
    "int": (4, "int32_t", "", "i32"),
    "long": (8, "int64_t", "", "i64"),
    "int128": (16, "uint8_t", "[16]", "raw"),
    "int256": (32, "uint8_t", "[32]", "raw"),
    "double": (8, "double", "", "double"),
    "Bool": (4, "bool", "", "bool"),
    "bytes": (4, "pt_tl_bytes", "", "bytes"),
    "string": (4, "pt_tl_bytes", "", "string"),
}
OBJECT_MIN = 4  # an encoded boxed value holds at least its constructor id
VECTOR_MIN = 8  # vector id + count
RESERVED_IDS = {0x1CB5C415: "vector (Vector<T>)", 0x997275B5: "boolTrue (Bool)",
                0xBC799737: "boolFalse (Bool)"}
# Names that cannot be struct members or would be expanded by common headers.
C_RESERVED = set("""auto break case char const continue default do double else enum
extern float for goto if inline int long register restrict return short signed sizeof
static struct switch typedef union unsigned void volatile while bool true false NULL
errno alignas alignof noreturn static_assert thread_local complex imaginary asm typeof
linux unix""".split())


class SchemaError(Exception):
    def __init__(self, line, msg):
        super().__init__(msg)
        self.line = line


# ---- model ------------------------------------------------------------------
# A type is a tuple: ("prim", name) | ("object",) | ("vec", elem) |
# ("ref", name) before resolution, then ("ctor", name) or ("type", name).

class Field:
    def __init__(self, name, tstr, typ):
        self.name = name            # as in the schema
        self.cname = mangle(name)   # as a C struct member
        self.tstr = tstr            # the type as written, for comments
        self.typ = typ


class Ctor:
    def __init__(self, line, name, cid, explicit, fields, result, family, decl):
        self.line = line
        self.name = name
        self.cid = cid
        self.explicit = explicit
        self.fields = fields
        self.result = result
        self.family = family
        self.decl = decl            # normalised text, for comments
        self.c = name.replace(".", "_")
        self.member = mangle(self.c)
        self.upper = self.c.upper()


def mangle(name):
    return name + "_" if name in C_RESERVED else name


def last_part(name):
    return name.rsplit(".", 1)[-1]


def parse_type(s, line):
    if s.startswith("Vector<"):
        if not s.endswith(">") or len(s) == len("Vector<>"):
            raise SchemaError(line, "malformed vector type '%s'" % s)
        return ("vec", parse_type(s[len("Vector<"):-1], line))
    if s in PRIMS:
        return ("prim", s)
    if s == "Object":
        return ("object",)
    if s == "Vector":
        raise SchemaError(line, "Vector needs an element type: Vector<T>")
    if re.fullmatch(NAME_RE, s):
        return ("ref", s)
    raise SchemaError(line, "unsupported or malformed type '%s' (flags, '#', '!' "
                      "and bare vectors are not part of this TL dialect)" % s)


def crc_text(name, fields, result):
    # TL's normalisation: bytes is an alias of string for the id.
    parts = [name]
    for f in fields:
        parts.append("%s:%s" % (f.name, "string" if f.tstr == "bytes" else f.tstr))
    parts += ["=", result]
    return " ".join(parts).replace("<", " ").replace(">", "")


def parse_decl(line, text, family):
    toks = text.replace("=", " = ").split()
    if toks.count("=") != 1:
        raise SchemaError(line, "expected 'name field:type ... = Result;'")
    eq = toks.index("=")
    if eq == 0:
        raise SchemaError(line, "missing constructor name before '='")
    if eq != len(toks) - 2:
        raise SchemaError(line, "expected exactly one result type after '='")
    head, result = toks[0], toks[-1]
    name, _, hexid = head.partition("#")
    if not re.fullmatch(NAME_RE, name):
        raise SchemaError(line, "malformed constructor name '%s'" % name)
    if not last_part(name)[0].islower():
        raise SchemaError(line, "constructor name '%s' must start with a lower-case "
                          "letter (TL convention; types are capitalised)" % name)
    if name in PRIMS or name in ("vector", "object"):
        raise SchemaError(line, "constructor name '%s' is a built-in type" % name)
    if "#" in head and not re.fullmatch(r"[0-9a-fA-F]{1,8}", hexid):
        raise SchemaError(line, "malformed constructor id '#%s' (1-8 hex digits)" % hexid)
    if not re.fullmatch(NAME_RE, result):
        raise SchemaError(line, "malformed result type '%s'" % result)
    if not last_part(result)[0].isupper():
        raise SchemaError(line, "result type '%s' must start with a capital letter" % result)
    if result in PRIMS or result == "Vector":
        raise SchemaError(line, "result type '%s' is a built-in type" % result)
    fields, seen = [], set()
    for tok in toks[1:eq]:
        m = re.fullmatch(r"(%s):(\S+)" % FIELD_RE, tok)
        if not m:
            raise SchemaError(line, "malformed field '%s' (expected name:type)" % tok)
        f = Field(m.group(1), m.group(2), parse_type(m.group(2), line))
        if f.cname in seen:
            raise SchemaError(line, "duplicate field '%s' in %s" % (f.name, name))
        seen.add(f.cname)
        fields.append(f)
    decl = crc_text(name, fields, result)
    if hexid:
        cid, explicit = int(hexid, 16), True
    else:
        cid, explicit = zlib.crc32(decl.encode("ascii")) & 0xFFFFFFFF, False
    return Ctor(line, name, cid, explicit, fields, result, family, decl)


def parse(path):
    try:
        with open(path, encoding="utf-8-sig") as fh:
            lines = fh.read().split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise SchemaError(0, "cannot read schema: %s" % e)
    ctors, families = [], []  # families: [name, line, [Ctor]]
    pending, start = "", 0
    for lineno, raw in enumerate(lines, 1):
        m = re.match(r"\s*//\s*@(\S*)(.*)$", raw)
        if m:
            if pending.strip():
                raise SchemaError(lineno, "directive inside the declaration started on "
                                  "line %d (missing ';'?)" % start)
            args = m.group(2).split()
            if m.group(1) != "family":
                raise SchemaError(lineno, "unknown directive '@%s'" % m.group(1))
            if len(args) != 1 or not re.fullmatch(FAMILY_RE, args[0]):
                raise SchemaError(lineno, "expected '// @family name' with a lower-case "
                                  "C identifier")
            if args[0] == "any":
                raise SchemaError(lineno, "family name 'any' is taken by pt_tl_decode_any()")
            if any(f[0] == args[0] for f in families):
                raise SchemaError(lineno, "duplicate family '%s'" % args[0])
            families.append([args[0], lineno, []])
            continue
        parts = raw.split("//", 1)[0].split(";")
        for i, part in enumerate(parts):
            if part.strip() and not pending.strip():
                start = lineno
            pending += " " + part
            if i == len(parts) - 1:
                break
            if not pending.strip():
                raise SchemaError(lineno, "empty declaration (stray ';')")
            if not families:
                raise SchemaError(start, "declaration before the first '// @family' line")
            c = parse_decl(start, pending, families[-1][0])
            families[-1][2].append(c)
            ctors.append(c)
            pending = ""
    if pending.strip():
        raise SchemaError(start, "declaration does not end with ';'")
    if not ctors:
        raise SchemaError(len(lines), "the schema declares no constructors")
    for name, line, members in families:
        if not members:
            raise SchemaError(line, "family '%s' has no constructors" % name)
    return ctors, [(f[0], f[2]) for f in families]


# ---- checks -------------------------------------------------------------------

class Schema:
    def __init__(self, ctors, families):
        self.ctors = ctors
        self.families = families
        self.by_name = {}
        self.types = {}  # result type -> [Ctor], in schema order
        by_id = {}
        for c in ctors:
            if c.name in self.by_name:
                raise SchemaError(c.line, "duplicate constructor '%s' (first on line %d)"
                                  % (c.name, self.by_name[c.name].line))
            if c.cid in RESERVED_IDS:
                raise SchemaError(c.line, "id %08x of '%s' is reserved for %s"
                                  % (c.cid, c.name, RESERVED_IDS[c.cid]))
            if c.cid in by_id:
                o = by_id[c.cid]
                raise SchemaError(c.line, "duplicate id %08x: '%s' and '%s' (line %d)"
                                  % (c.cid, c.name, o.name, o.line))
            self.by_name[c.name] = c
            by_id[c.cid] = c
            if c.result != "Object":  # Object is TL's universal type, never a field's type
                self.types.setdefault(c.result, []).append(c)
        for c in ctors:
            for f in c.fields:
                f.typ = self.resolve(f.typ, c, f)
        self.check_open()
        self.compute_min()

    def resolve(self, t, c, f):
        if t[0] == "vec":
            inner = self.resolve(t[1], c, f)
            if inner[0] == "object":
                raise SchemaError(c.line, "field '%s': Vector<Object> is not supported "
                                  "(Object takes the rest of the input)" % f.name)
            return ("vec", inner)
        if t[0] != "ref":
            return t
        if t[1] in self.by_name:
            return ("ctor", t[1])
        if t[1] in self.types:
            return ("type", t[1])
        raise SchemaError(c.line, "unknown type '%s' in field '%s' of %s" % (t[1], f.name, c.name))

    def type_ctors(self, t):
        if t[0] == "ctor":
            return [self.by_name[t[1]]]
        if t[0] == "type":
            return self.types[t[1]]
        return []

    def check_open(self):
        # A constructor is open when it ends in Object, directly or through its
        # last field: it then swallows the rest of its input and may only sit
        # in last place itself.
        for c in self.ctors:
            for i, f in enumerate(c.fields):
                if f.typ[0] == "object" and i != len(c.fields) - 1:
                    raise SchemaError(c.line, "field '%s' of %s: Object must be the last "
                                      "field" % (f.name, c.name))
        is_open = {c.name: False for c in self.ctors}
        changed = True
        while changed:
            changed = False
            for c in self.ctors:
                if is_open[c.name] or not c.fields:
                    continue
                t = c.fields[-1].typ
                if t[0] == "object" or any(is_open[o.name] for o in self.type_ctors(t)):
                    is_open[c.name] = changed = True
        for c in self.ctors:
            for i, f in enumerate(c.fields):
                t, in_vec = f.typ, False
                while t[0] == "vec":
                    t, in_vec = t[1], True
                if any(is_open[o.name] for o in self.type_ctors(t)) and \
                        (in_vec or i != len(c.fields) - 1):
                    raise SchemaError(c.line, "field '%s' of %s: type '%s' ends in Object and "
                                      "takes the rest of the input, so it must be the last "
                                      "field and not a vector item" % (f.name, c.name, t[1]))

    def compute_min(self):
        inf = float("inf")
        self.cmin = {c.name: inf for c in self.ctors}
        changed = True
        while changed:
            changed = False
            for c in self.ctors:
                m = 4 + sum(self.min_size(f.typ) for f in c.fields)
                if m < self.cmin[c.name]:
                    self.cmin[c.name], changed = m, True
        for c in self.ctors:
            if self.cmin[c.name] == inf:
                raise SchemaError(c.line, "%s can never be encoded: every value of it "
                                  "contains another one (recursion without a base case)" % c.name)

    def min_size(self, t):
        if t[0] == "prim":
            return PRIMS[t[1]][0]
        if t[0] == "object":
            return OBJECT_MIN
        if t[0] == "vec":
            return VECTOR_MIN
        return min(self.cmin[o.name] for o in self.type_ctors(t))


# ---- C generation ---------------------------------------------------------------

def vec_key(t):
    if t[0] == "prim":
        return "bool" if t[1] == "Bool" else t[1]
    if t[0] == "vec":
        return "vec_" + vec_key(t[1])
    return t[1].replace(".", "_")


def addr(lv):
    """The address of lvalue lv; "*p" gives "p"."""
    return lv[1:] if lv.startswith("*") else "&" + lv


def tc(name):
    """C spelling of a result type."""
    return name.replace(".", "_")


class Gen:
    def __init__(self, schema, schema_name):
        self.s = schema
        self.schema_name = schema_name
        self.idents = {}
        self.vecs = []     # distinct vector types, inner ones first
        self.used_ctors = set()
        self.used_types = set()
        for c in schema.ctors:
            for f in c.fields:
                self.note_type(f.typ)
        self.register_all()

    def note_type(self, t):
        if t[0] == "vec":
            self.note_type(t[1])
            if t not in self.vecs:
                self.vecs.append(t)
        elif t[0] == "ctor":
            self.used_ctors.add(t[1])
        elif t[0] == "type":
            self.used_types.add(t[1])

    def reg(self, ident, owner, line):
        prev = self.idents.get(ident)
        if prev and prev[0] != owner:
            raise SchemaError(line, "generated C name '%s' for %s collides with the one for "
                              "%s; rename one of them" % (ident, owner, prev[0]))
        self.idents[ident] = (owner, line)

    def register_all(self):
        fixed = ["PT_TL_H", "PT_TL_MAX_DEPTH", "TL_TRY", "pt_tl_bytes", "pt_tl_obj",
                 "pt_tl_decode_any", "pt_tl_encode_any", "pt_tl_name", "tl_read_obj",
                 "tl_put_obj", "tl_decode_top", "tl_known"]
        for ident in fixed:
            self.reg(ident, "the runtime", 0)
        for name, members in self.s.families:
            line = members[0].line
            self.reg("pt_tl_decode_" + name, "family " + name, line)
            self.reg("tl_in_family_" + name, "family " + name, line)
        for c in self.s.ctors:
            owner = "constructor " + c.name
            self.reg("PT_TL_%s_ID" % c.upper, owner, c.line)
            for ident in ["pt_tl_%s", "pt_tl_%s_encode", "pt_tl_%s_decode", "tl_read_%s",
                          "tl_put_%s", "tl_get_%s"]:
                self.reg(ident % c.c, owner, c.line)
            self.reg("u." + c.member, owner, c.line)
        for t in sorted(self.used_types):
            line = self.s.types[t][0].line
            for ident in ["tl_is_type_%s", "tl_get_type_%s", "tl_put_type_%s"]:
                self.reg(ident % tc(t), "type " + t, line)
        for v in self.vecs:
            k = vec_key(v)
            line = self.s.ctors[0].line
            for ident in ["pt_tl_%s", "tl_read_%s", "tl_put_%s"]:
                self.reg(ident % k, "Vector<%s>" % self.tstr(v[1]), line)

    def tstr(self, t):
        if t[0] == "prim":
            return t[1]
        if t[0] == "object":
            return "Object"
        if t[0] == "vec":
            return "Vector<%s>" % self.tstr(t[1])
        return t[1]

    # -- C declarations --

    def c_base(self, t):
        if t[0] == "prim":
            return PRIMS[t[1]][1], PRIMS[t[1]][2]
        if t[0] == "object":
            return "pt_tl_bytes", ""
        if t[0] == "vec":
            return "pt_tl_" + vec_key(t), ""
        if t[0] == "ctor":
            return "pt_tl_" + self.s.by_name[t[1]].c, ""
        return "pt_tl_obj", ""

    def field_decl(self, f):
        base, suffix = self.c_base(f.typ)
        if f.typ[0] in ("ctor", "type"):
            return "%s *%s;" % (base, f.cname)
        return "%s %s%s;" % (base, f.cname, suffix)

    def field_note(self, f):
        t = f.typ
        notes = {"string": "string: UTF-8, points into the input",
                 "bytes": "bytes: points into the input"}
        if t[0] == "prim":
            return notes.get(t[1], t[1])
        if t[0] == "object":
            return "Object: an encoded boxed value, the rest of the input"
        if t[0] == "vec":
            return f.tstr
        if t[0] == "ctor":
            return "%s, boxed; never NULL; arena memory after a decode" % t[1]
        names = ", ".join(c.name for c in self.s.types[t[1]])
        return "%s (%s), boxed; never NULL; arena memory after a decode" % (t[1], names)

    def items_decl(self, t):
        base, suffix = self.c_base(t)
        if suffix:
            return "%s (*items)%s;" % (base, suffix)
        return "%s *items;" % base

    # -- code for one value --

    def read_value(self, t, lv):
        """Lines reading a value of type t into lvalue lv (for ctor and type,
        lv is the storage itself)."""
        if t[0] == "prim":
            how = PRIMS[t[1]][3]
            if how == "raw":
                return ["TL_TRY(pt_wire_get_raw(r, %s, sizeof %s));" % (lv, lv)]
            return ["TL_TRY(pt_wire_get_%s(r, &%s));" % (how, lv)]
        if t[0] == "object":
            return ["TL_TRY(pt_wire_get_object(r, &%s));" % lv]
        if t[0] == "vec":
            return ["TL_TRY(tl_read_%s(r, &%s));" % (vec_key(t), lv)]
        if t[0] == "ctor":
            return ["TL_TRY(tl_get_%s(r, %s));" % (self.s.by_name[t[1]].c, addr(lv))]
        return ["TL_TRY(tl_get_type_%s(r, %s));" % (tc(t[1]), addr(lv))]

    def put_value(self, t, lv):
        """Lines writing the value at lvalue lv (depth: the enclosing object's)."""
        if t[0] == "prim":
            how = PRIMS[t[1]][3]
            if how == "raw":
                return ["TL_TRY(pt_wire_put_raw(out, %s, sizeof %s));" % (lv, lv)]
            if how in ("bytes", "string"):
                return ["TL_TRY(pt_wire_put_%s(out, &%s));" % (how, lv)]
            return ["TL_TRY(pt_wire_put_%s(out, %s));" % (how, lv)]
        if t[0] == "object":
            return ["TL_TRY(pt_wire_put_object(out, &%s));" % lv]
        if t[0] == "vec":
            return ["TL_TRY(tl_put_%s(out, &%s, depth));" % (vec_key(t), lv)]
        if t[0] == "ctor":
            return ["TL_TRY(tl_put_%s(out, %s, depth + 1));" % (self.s.by_name[t[1]].c, addr(lv))]
        return ["TL_TRY(tl_put_type_%s(out, %s, depth + 1));" % (tc(t[1]), addr(lv))]

    @staticmethod
    def nests(t):
        while t[0] == "vec":
            t = t[1]
        return t[0] in ("ctor", "type")

    # -- the header --

    def header(self):
        s = self.s
        o = []
        w = o.append
        w("/* Generated by scripts/tlgen.py from %s. Do not edit: change the schema"
          % self.schema_name)
        w(" * or the generator.")
        w(" *")
        w(" * One struct, one id and one encode/decode pair per constructor; pt_tl_obj")
        w(" * holds any of them. Contract for every function below:")
        w(" *  - encode appends the boxed encoding (constructor id first) to out and")
        w(" *    returns 0; on error out is left as it was. PT_ERR_INVAL when a value")
        w(" *    cannot be encoded (invalid UTF-8 in a string, a nested object of the")
        w(" *    wrong type, an Object that is not a boxed value), PT_ERR_TOO_BIG for")
        w(" *    bytes of 2^24 or more or nesting beyond PT_TL_MAX_DEPTH, PT_ERR_NOMEM.")
        w(" *    NULL pointers where a value is required are caller bugs and abort.")
        w(" *  - decode takes exactly one boxed value filling buf[0..len) and returns 0,")
        w(" *    PT_ERR_DECODE for malformed input (truncation, trailing bytes, wrong")
        w(" *    ids, non-canonical bytes) or PT_ERR_TOO_BIG when the arena is full or")
        w(" *    nesting exceeds PT_TL_MAX_DEPTH. It allocates only from a; bytes,")
        w(" *    string and Object fields point into buf. The result is valid while buf")
        w(" *    and the arena memory live and the arena is not reset. On error the")
        w(" *    output is zeroed and the arena is back where it was. */")
        w("#ifndef PT_TL_H")
        w("#define PT_TL_H")
        w("")
        w("#include \"common/pt_common.h\"")
        w("#include \"wire/pt_wire.h\"")
        w("")
        w("/* Constructor ids. */")
        width = max(len("PT_TL_%s_ID" % c.upper) for c in s.ctors)
        for c in s.ctors:
            how = "" if c.explicit else ", crc32(\"%s\")" % c.decl
            w("#define %-*s 0x%08xu /* %s%s */" % (width, "PT_TL_%s_ID" % c.upper, c.cid,
                                                c.name, how))
        w("")
        w("typedef struct pt_tl_obj pt_tl_obj;")
        for v in self.vecs:
            w("typedef struct pt_tl_%s pt_tl_%s;" % (vec_key(v), vec_key(v)))
        for c in s.ctors:
            w("typedef struct pt_tl_%s pt_tl_%s;" % (c.c, c.c))
        for v in self.vecs:
            k = vec_key(v)
            w("")
            w("/* %s */" % self.tstr(v))
            w("typedef struct pt_tl_%s {" % k)
            items = self.items_decl(v[1])
            width = max(len(items), len("uint32_t n;"))
            w("    %-*s /* number of items */" % (width, "uint32_t n;"))
            w("    %-*s /* n items; arena memory after a decode, NULL when n == 0 */"
              % (width, items))
            w("} pt_tl_%s;" % k)
        for c in s.ctors:
            w("")
            w("/* %s#%08x%s = %s; (family %s) */" % (
                c.name, c.cid, "".join(" %s:%s" % (f.name, f.tstr) for f in c.fields),
                c.result, c.family))
            w("typedef struct pt_tl_%s {" % c.c)
            rows = [(self.field_decl(f), self.field_note(f)) for f in c.fields]
            if not rows:
                rows = [("uint8_t unused_;", "no fields; C has no empty structs")]
            width = max(len(d) for d, _ in rows)
            for d, note in rows:
                w("    %-*s /* %s */" % (width, d, note))
            w("} pt_tl_%s;" % c.c)
        w("")
        w("/* Any constructor of the schema. */")
        w("struct pt_tl_obj {")
        w("    uint32_t id; /* a PT_TL_*_ID: says which member of u is valid */")
        w("    union {")
        for c in s.ctors:
            w("        pt_tl_%s %s;" % (c.c, c.member))
        w("    } u;")
        w("};")
        w("")
        for c in s.ctors:
            w("PT_WUR int pt_tl_%s_encode(pt_buf *out, const pt_tl_%s *v);" % (c.c, c.c))
            w("PT_WUR int pt_tl_%s_decode(pt_tl_%s *v, const uint8_t *buf, size_t len, "
              "pt_arena *a);" % (c.c, c.c))
        w("")
        w("/* Decodes any constructor of the schema into out (out->id says which). */")
        w("PT_WUR int pt_tl_decode_any(pt_tl_obj *out, const uint8_t *buf, size_t len, "
          "pt_arena *a);")
        w("/* Encodes v according to v->id; PT_ERR_INVAL for an unknown id. */")
        w("PT_WUR int pt_tl_encode_any(pt_buf *out, const pt_tl_obj *v);")
        for name, members in s.families:
            text = ("As pt_tl_decode_any(), but accepts only the %s family (%s); other "
                    "ids, known or not, are PT_ERR_DECODE." %
                    (name, ", ".join(c.name for c in members)))
            for i, line in enumerate(textwrap.wrap(text, 76)):
                w(("/* " if i == 0 else " * ") + line)
            o[-1] += " */"
            w("PT_WUR int pt_tl_decode_%s(pt_tl_obj *out, const uint8_t *buf, size_t len, "
              "pt_arena *a);" % name)
        w("/* The schema name of a constructor id (\"pt.echo\"), or NULL if unknown. */")
        w("const char *pt_tl_name(uint32_t id);")
        w("")
        w("#endif /* PT_TL_H */")
        return "\n".join(o) + "\n"

    # -- the source --

    def source(self):
        s = self.s
        o = []
        w = o.append
        w("/* Generated by scripts/tlgen.py from %s. Do not edit. */" % self.schema_name)
        w("#include \"pt_tl.h\"")
        w("")
        w("#define TL_TRY(e)                      \\")
        w("    do {                               \\")
        w("        int rc_ = (e);                 \\")
        w("        if (rc_ != 0) return rc_;      \\")
        w("    } while (0)")
        w("")
        # Prototypes first: the schema may be recursive.
        w("static int tl_read_obj(pt_wire_reader *r, pt_tl_obj *o);")
        w("static int tl_put_obj(pt_buf *out, const pt_tl_obj *o, unsigned depth);")
        for c in s.ctors:
            w("static int tl_read_%s(pt_wire_reader *r, pt_tl_%s *v);" % (c.c, c.c))
            w("static int tl_put_%s(pt_buf *out, const pt_tl_%s *v, unsigned depth);"
              % (c.c, c.c))
            if c.name in self.used_ctors:
                w("static int tl_get_%s(pt_wire_reader *r, pt_tl_%s *v);" % (c.c, c.c))
        for t in sorted(self.used_types):
            w("static int tl_get_type_%s(pt_wire_reader *r, pt_tl_obj *o);" % tc(t))
            w("static int tl_put_type_%s(pt_buf *out, const pt_tl_obj *o, unsigned depth);"
              % tc(t))
        for v in self.vecs:
            k = vec_key(v)
            w("static int tl_read_%s(pt_wire_reader *r, pt_tl_%s *v);" % (k, k))
            w("static int tl_put_%s(pt_buf *out, const pt_tl_%s *v, unsigned depth);"
              % (k, k))

        for v in self.vecs:
            k, e = vec_key(v), v[1]
            w("")
            w("/* %s: each item takes at least %d bytes. */" % (self.tstr(v), s.min_size(e)))
            w("static int tl_read_%s(pt_wire_reader *r, pt_tl_%s *v)" % (k, k))
            w("{")
            w("    uint32_t n;")
            w("    TL_TRY(pt_wire_get_vector(r, &n, %d));" % s.min_size(e))
            w("    v->n = n;")
            w("    v->items = NULL;")
            w("    if (n == 0) return 0;")
            w("    v->items = pt_arena_alloc(r->arena, n, sizeof *v->items);")
            w("    if (!v->items) return PT_ERR_TOO_BIG;")
            w("    for (uint32_t i = 0; i < n; i++) {")
            for line in self.read_value(e, "v->items[i]"):
                w("        " + line)
            w("    }")
            w("    return 0;")
            w("}")
            w("")
            w("static int tl_put_%s(pt_buf *out, const pt_tl_%s *v, unsigned depth)"
              % (k, k))
            w("{")
            if not self.nests(e):
                w("    (void)depth;")
            w("    PT_ASSERT(v->items || v->n == 0);")
            w("    TL_TRY(pt_wire_put_vector(out, v->n));")
            w("    for (uint32_t i = 0; i < v->n; i++) {")
            for line in self.put_value(e, "v->items[i]"):
                w("        " + line)
            w("    }")
            w("    return 0;")
            w("}")

        for t in sorted(self.used_types):
            members = s.types[t]
            w("")
            w("static bool tl_is_type_%s(uint32_t id)" % tc(t))
            w("{")
            w("    switch (id) {")
            for c in members:
                w("    case PT_TL_%s_ID:" % c.upper)
            w("        return true;")
            w("    default:")
            w("        return false;")
            w("    }")
            w("}")
            w("")
            w("/* A boxed %s: one of %s. */" % (t, ", ".join(c.name for c in members)))
            w("static int tl_get_type_%s(pt_wire_reader *r, pt_tl_obj *o)" % tc(t))
            w("{")
            w("    uint32_t id;")
            w("    TL_TRY(pt_wire_enter(r));")
            w("    TL_TRY(pt_wire_get_u32(r, &id));")
            w("    if (!tl_is_type_%s(id)) return PT_ERR_DECODE;" % tc(t))
            w("    o->id = id;")
            w("    TL_TRY(tl_read_obj(r, o));")
            w("    pt_wire_leave(r);")
            w("    return 0;")
            w("}")
            w("")
            w("static int tl_put_type_%s(pt_buf *out, const pt_tl_obj *o, unsigned depth)"
              % tc(t))
            w("{")
            w("    if (!tl_is_type_%s(o->id)) return PT_ERR_INVAL;" % tc(t))
            w("    return tl_put_obj(out, o, depth);")
            w("}")

        for c in s.ctors:
            w("")
            w("/* %s */" % c.decl)
            w("static int tl_read_%s(pt_wire_reader *r, pt_tl_%s *v)" % (c.c, c.c))
            w("{")
            if not c.fields:
                w("    (void)r;")
                w("    (void)v;")
            for f in c.fields:
                lv = "v->" + f.cname
                if f.typ[0] in ("ctor", "type"):
                    w("    %s = pt_arena_alloc(r->arena, 1, sizeof *%s);" % (lv, lv))
                    w("    if (!%s) return PT_ERR_TOO_BIG;" % lv)
                    lv = "*" + lv
                for line in self.read_value(f.typ, lv):
                    w("    " + line)
            w("    return 0;")
            w("}")
            w("")
            w("static int tl_put_%s(pt_buf *out, const pt_tl_%s *v, unsigned depth)"
              % (c.c, c.c))
            w("{")
            if not c.fields:
                w("    (void)v;")
            w("    if (depth > PT_TL_MAX_DEPTH) return PT_ERR_TOO_BIG;")
            w("    TL_TRY(pt_wire_put_u32(out, PT_TL_%s_ID));" % c.upper)
            for f in c.fields:
                lv = "v->" + f.cname
                if f.typ[0] in ("ctor", "type"):
                    w("    PT_ASSERT(%s != NULL);" % lv)
                    lv = "*" + lv
                for line in self.put_value(f.typ, lv):
                    w("    " + line)
            w("    return 0;")
            w("}")
            if c.name in self.used_ctors:
                w("")
                w("static int tl_get_%s(pt_wire_reader *r, pt_tl_%s *v)" % (c.c, c.c))
                w("{")
                w("    uint32_t id;")
                w("    TL_TRY(pt_wire_enter(r));")
                w("    TL_TRY(pt_wire_get_u32(r, &id));")
                w("    if (id != PT_TL_%s_ID) return PT_ERR_DECODE;" % c.upper)
                w("    TL_TRY(tl_read_%s(r, v));" % c.c)
                w("    pt_wire_leave(r);")
                w("    return 0;")
                w("}")
            w("")
            w("int pt_tl_%s_encode(pt_buf *out, const pt_tl_%s *v)" % (c.c, c.c))
            w("{")
            w("    PT_ASSERT(out && v);")
            w("    size_t mark = out->len;")
            w("    int rc = tl_put_%s(out, v, 0);" % c.c)
            w("    if (rc) out->len = mark;")
            w("    return rc;")
            w("}")
            w("")
            w("int pt_tl_%s_decode(pt_tl_%s *v, const uint8_t *buf, size_t len, pt_arena *a)"
              % (c.c, c.c))
            w("{")
            w("    PT_ASSERT(v && a && (buf || len == 0));")
            w("    pt_wire_reader r;")
            w("    size_t mark = a->used;")
            w("    uint32_t id = 0;")
            w("    pt_wire_reader_init(&r, buf, len, a);")
            w("    int rc = pt_wire_get_u32(&r, &id);")
            w("    if (rc == 0 && id != PT_TL_%s_ID) rc = PT_ERR_DECODE;" % c.upper)
            w("    if (rc == 0) rc = tl_read_%s(&r, v);" % c.c)
            w("    if (rc == 0) rc = pt_wire_end(&r);")
            w("    if (rc) {")
            w("        memset(v, 0, sizeof *v);")
            w("        a->used = mark;")
            w("    }")
            w("    return rc;")
            w("}")

        w("")
        w("static int tl_read_obj(pt_wire_reader *r, pt_tl_obj *o)")
        w("{")
        w("    switch (o->id) {")
        for c in s.ctors:
            w("    case PT_TL_%s_ID:" % c.upper)
            w("        return tl_read_%s(r, &o->u.%s);" % (c.c, c.member))
        w("    default:")
        w("        return PT_ERR_DECODE;")
        w("    }")
        w("}")
        w("")
        w("static int tl_put_obj(pt_buf *out, const pt_tl_obj *o, unsigned depth)")
        w("{")
        w("    switch (o->id) {")
        for c in s.ctors:
            w("    case PT_TL_%s_ID:" % c.upper)
            w("        return tl_put_%s(out, &o->u.%s, depth);" % (c.c, c.member))
        w("    default:")
        w("        return PT_ERR_INVAL;")
        w("    }")
        w("}")
        w("")
        w("const char *pt_tl_name(uint32_t id)")
        w("{")
        w("    switch (id) {")
        for c in s.ctors:
            w("    case PT_TL_%s_ID:" % c.upper)
            w("        return \"%s\";" % c.name)
        w("    default:")
        w("        return NULL;")
        w("    }")
        w("}")
        w("")
        w("static bool tl_known(uint32_t id) { return pt_tl_name(id) != NULL; }")
        for name, members in s.families:
            w("")
            w("static bool tl_in_family_%s(uint32_t id)" % name)
            w("{")
            w("    switch (id) {")
            for c in members:
                w("    case PT_TL_%s_ID:" % c.upper)
            w("        return true;")
            w("    default:")
            w("        return false;")
            w("    }")
            w("}")
        w("")
        w("static int tl_decode_top(pt_tl_obj *out, const uint8_t *buf, size_t len, pt_arena *a,")
        w("                         bool (*accept)(uint32_t id))")
        w("{")
        w("    PT_ASSERT(out && a && (buf || len == 0));")
        w("    pt_wire_reader r;")
        w("    size_t mark = a->used;")
        w("    uint32_t id = 0;")
        w("    pt_wire_reader_init(&r, buf, len, a);")
        w("    int rc = pt_wire_get_u32(&r, &id);")
        w("    if (rc == 0 && !accept(id)) rc = PT_ERR_DECODE;")
        w("    if (rc == 0) {")
        w("        out->id = id;")
        w("        rc = tl_read_obj(&r, out);")
        w("    }")
        w("    if (rc == 0) rc = pt_wire_end(&r);")
        w("    if (rc) {")
        w("        memset(out, 0, sizeof *out);")
        w("        a->used = mark;")
        w("    }")
        w("    return rc;")
        w("}")
        w("")
        w("int pt_tl_decode_any(pt_tl_obj *out, const uint8_t *buf, size_t len, pt_arena *a)")
        w("{")
        w("    return tl_decode_top(out, buf, len, a, tl_known);")
        w("}")
        for name, _ in s.families:
            w("")
            w("int pt_tl_decode_%s(pt_tl_obj *out, const uint8_t *buf, size_t len, pt_arena *a)"
              % name)
            w("{")
            w("    return tl_decode_top(out, buf, len, a, tl_in_family_%s);" % name)
            w("}")
        w("")
        w("int pt_tl_encode_any(pt_buf *out, const pt_tl_obj *v)")
        w("{")
        w("    PT_ASSERT(out && v);")
        w("    size_t mark = out->len;")
        w("    int rc = tl_put_obj(out, v, 0);")
        w("    if (rc) out->len = mark;")
        w("    return rc;")
        w("}")
        return "\n".join(o) + "\n"


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main(argv):
    if len(argv) != 3:
        print("usage: tlgen.py SCHEMA OUTDIR", file=sys.stderr)
        return 2
    path, outdir = argv[1], argv[2]
    try:
        ctors, families = parse(path)
        gen = Gen(Schema(ctors, families), os.path.basename(path))
        header, source = gen.header(), gen.source()
    except SchemaError as e:
        print("%s:%d: error: %s" % (path, e.line, e), file=sys.stderr)
        return 1
    os.makedirs(outdir, exist_ok=True)
    write_atomic(os.path.join(outdir, "pt_tl.h"), header)
    write_atomic(os.path.join(outdir, "pt_tl.c"), source)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
