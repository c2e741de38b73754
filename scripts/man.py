#!/usr/bin/env python3
"""Generates the roff man pages in docs/man from their markdown sources with pandoc.

  docs/man/NAME.N.md   -> docs/man/NAME.N
  docs/packtrack.1.md  -> docs/man/packtrack.1   (the user guide is the page's source)
  include/packtrack.h  -> the CONTRACT and FUNCTIONS of libpacktrack.3

--check regenerates in memory and exits 1 when a committed page differs (tests/ops).
"""
import pathlib, re, subprocess, sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAN = ROOT / "docs" / "man"


def pandoc(md: str) -> str:
    return subprocess.run(["pandoc", "-s", "-f", "markdown", "-t", "man"], input=md, text=True,
                          capture_output=True, check=True).stdout


def header_parts():
    text = (ROOT / "include" / "packtrack.h").read_text()
    contract = re.search(r"/\*\n \* packtrack\.h.*?\n(.*?)\*/", text, re.S).group(1)
    contract = "\n".join(l[3:] if l.startswith(" * ") else l.lstrip(" *") for l in contract.splitlines())
    funcs, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("PT_API "):
            j = i
            while not lines[j].rstrip().endswith(";") and not lines[j].rstrip().endswith("*/"):
                j += 1
            proto = " ".join(l.strip() for l in lines[i:j + 1])
            proto = re.sub(r"^PT_API ", "", proto)
            trail = re.search(r"/\*(.*?)\*/\s*$", proto)
            proto = re.sub(r"\s*/\*.*?\*/\s*$", "", proto)
            doc = [trail.group(1).strip()] if trail else []
            k = i - 1  # the comment block right above, if any
            block = []
            if k >= 0 and lines[k].rstrip().endswith("*/"):
                while k >= 0:
                    block.insert(0, lines[k])
                    if lines[k].lstrip().startswith("/*"):
                        break
                    k -= 1
            comment = " ".join(re.sub(r"^\s*(/\*+|\*/|\*)\s?", "", l).replace("*/", "").strip() for l in block)
            doc = [comment.strip()] + doc if comment.strip() else doc
            funcs.append((proto, " ".join(doc)))
            i = j + 1
        else:
            i += 1
    out = []
    for proto, doc in funcs:
        out.append("**" + proto.replace("*", "\\*") + "**\n:   " + (doc.replace("*", "\\*") or "(see packtrack.h)") + "\n")
    contract = re.sub(r"\n\s*- ", "\n- ", contract.strip()).replace(":\n- ", ":\n\n- ", 1)
    return contract, "\n".join(out)


def pages():
    for md in sorted(MAN.glob("*.md")):
        src = md.read_text()
        if md.name.startswith("libpacktrack."):
            contract, funcs = header_parts()
            src = src.replace("@CONTRACT@", contract).replace("@FUNCTIONS@", funcs)
        yield MAN / md.name[:-3], src
    guide = (ROOT / "docs" / "packtrack.1.md").read_text().split("\n", 1)[1]  # its "# packtrack(1)" title
    guide = re.sub(r"^#(#+) ", r"\1 ", guide, flags=re.M)  # its sections are "##"
    yield MAN / "packtrack.1", "% PACKTRACK(1) PackTrack 0.1.0 | PackTrack Manual\n\n# NAME\n\n" \
        "packtrack - the PackTrack messaging client\n" + guide


def main():
    check = "--check" in sys.argv
    stale = []
    for out, src in pages():
        roff = pandoc(src)
        if check:
            if not out.exists() or out.read_text() != roff:
                stale.append(out.name)
        else:
            out.write_text(roff)
    if stale:
        print("man pages out of date (run make man): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
