#!/usr/bin/env python3
"""docs/cli.md, the man page and the built CLI's --help say the same.

docs/cli.toml is their one source (tools/cli_doc.py); this fails when
  - docs/cli.md is not what the source makes (edited by hand, or not regenerated),
  - the commands (and their forms) of `shmstate --help`, `shmstate NAME --help`,
    the man page and docs/cli.md differ,
  - an option docs/cli.md names for a command is one the CLI refuses,
  - the exit statuses of --help, the man page and docs/cli.md differ,
  - the --json keys of docs/cli.md and the man page differ, or the keys the CLI
    really prints (a segment holding one object of every kind) are not the
    documented ones,
  - groff (when installed) warns about the man page.
Usage: cli_doc_check.py SOURCE_ROOT SHMSTATE MAN_PAGE
"""
import json
import os
import re
import shutil
import subprocess
import sys

source_root, shmstate, man_page = sys.argv[1:4]
sys.path.insert(0, os.path.join(source_root, "tools"))
import cli_doc  # noqa: E402

failures = []
# Options `new` needs for a kind without defaults for them (none so far).
KIND_OPTIONS = {}


def fail(msg):
    failures.append(msg)


def run(*args, check=True):
    r = subprocess.run([shmstate, *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"FAIL: shmstate {' '.join(args)} exited {r.returncode}: {r.stderr}")
    return r


def same(what, **sources):
    """Every source (name=list) holds the same items, in the same order."""
    items = list(sources.items())
    first_name, first = items[0]
    for name, other in items[1:]:
        if other != first:
            fail(f"{what}: {first_name} has {first}, {name} has {other}"
                 f" (only in {first_name}: {sorted(set(first) - set(other))},"
                 f" only in {name}: {sorted(set(other) - set(first))})")


# ---- docs/cli.md is the generated one ---------------------------------------------
toml_path = os.path.join(source_root, "docs", "cli.toml")
md_path = os.path.join(source_root, "docs", "cli.md")
src = cli_doc.load(toml_path)
md = open(md_path).read()
if md != cli_doc.make_md(src):
    fail("docs/cli.md is not what docs/cli.toml makes: edit docs/cli.toml, then run "
         "python3 tools/cli_doc.py md docs/cli.toml docs/cli.md")


def md_section(title, level=2):
    m = re.search(rf"^{'#' * level} {re.escape(title)}\n(.*?)(?=^#{{1,{level}}} |\Z)", md, re.S | re.M)
    if not m:
        sys.exit(f"FAIL: docs/cli.md has no section '{title}'")
    return m.group(1)


def md_first_cells(section):
    """The first cell of each row of the section's first table (not the header,
    without backquotes), and the row."""
    table = re.search(r"^\|.*\n(?:\|.*\n?)*", section, re.M)
    rows = table.group(0).rstrip("\n").split("\n")[2:] if table else []
    return [(re.split(r"(?<!\\)\|", r)[1].strip().replace("\\|", "|").strip("`"), r) for r in rows]


# ---- the man page -------------------------------------------------------------
man = open(man_page).read()


def plain(roff):
    return re.sub(r"\\f[BIR]", "", roff).replace("\\-", "-").replace("\\&", "").replace("\\e", "\\")


def man_section(title):
    m = re.search(rf'^\.SH "?{re.escape(title)}"?\n(.*?)(?=^\.SH |\Z)', man, re.S | re.M)
    if not m:
        sys.exit(f"FAIL: the man page has no section {title}")
    return m.group(1)


def man_tags(section):
    """The tag line of each .TP entry, and the entry's text."""
    entries = re.findall(r"^\.TP\n(.*)\n((?:(?!\.TP|\.SS|\.PP).*\n)*)", section, re.M)
    return [(plain(tag), plain(body)) for tag, body in entries]


# ---- commands -----------------------------------------------------------------
top = run("--help").stdout
help_block = top.split("\ncommands:\n", 1)[1].split("\n\n", 1)[0]
help_commands = re.findall(r"^  (\S+)", help_block, re.M)

md_forms = [cell for cell, _ in md_first_cells(md_section("Commands"))]
md_rows = {cell: row for cell, row in md_first_cells(md_section("Commands"))}
man_entries = man_tags(man_section("COMMANDS").split("\n.SS ", 1)[0])
man_forms = [tag.removeprefix("shmstate ") for tag, _ in man_entries]
man_bodies = {tag.removeprefix("shmstate "): body for tag, body in man_entries}
synopsis = plain(man_section("SYNOPSIS"))
man_synopsis_forms = [line.removeprefix("shmstate ") for line in synopsis.split("\n")
                      if line.startswith("shmstate ") and not line.startswith(("shmstate COMMAND", "shmstate --"))]


def names(forms):
    out = []
    for f in forms:
        if f.split(" ", 1)[0] not in out:
            out.append(f.split(" ", 1)[0])
    return out


same("commands", **{"shmstate --help": help_commands, "docs/cli.md": names(md_forms),
                    "the man page's COMMANDS": names(man_forms), "its SYNOPSIS": names(man_synopsis_forms),
                    "docs/cli.toml": [c["name"] for c in src["command"]]})
same("command forms", **{"docs/cli.md": md_forms, "the man page's COMMANDS": man_forms,
                         "its SYNOPSIS": man_synopsis_forms})

for name in help_commands:
    usage = run(name, "--help").stdout.split("\n", 1)[0]
    forms = [f.split(" ", 1)[1] if " " in f else "" for f in md_forms if f.split(" ", 1)[0] == name]
    if not usage.startswith(f"usage: shmstate {name} ") or \
            not cli_doc.forms_match(usage.removeprefix(f"usage: shmstate {name} "), forms):
        fail(f"`shmstate {name} --help` says '{usage}', docs/cli.md's forms are {forms} ({cli_doc.FORMS_RULE})")
    # Each option docs/cli.md and the man page name for the command is one it takes.
    text = " ".join(md_rows.get(f"{name} {f}", "") + man_bodies.get(f"{name} {f}", "") + f for f in forms)
    for option in sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text)) - {"--help"}):
        takes = (run(name, option, "--help", check=False).returncode == 0 or
                 run(name, option + "=1", "--help", check=False).returncode == 0)
        if not takes:
            fail(f"the docs name {option} for `{name}`, but `shmstate {name}` refuses it")

# ---- exit statuses ------------------------------------------------------------
help_exits = re.findall(r"^  (\d+)  ", top.split("\nexit status:\n", 1)[1], re.M)
md_exits = [cell for cell, _ in md_first_cells(md_section("Exit statuses"))]
man_exits = [tag for tag, _ in man_tags(man_section("EXIT STATUS"))]
same("exit statuses", **{"shmstate --help": help_exits, "docs/cli.md": md_exits, "the man page": man_exits})
for name in help_commands:
    if run(name, "--help").stdout.split("\nexit status:\n", 1)[-1] != top.split("\nexit status:\n", 1)[1]:
        fail(f"`shmstate {name} --help` has other exit statuses than `shmstate --help`")

# ---- --json keys --------------------------------------------------------------
man_json = man_section("JSON OUTPUT")
documented = {}
for title in ("`shmstate list --json`", "`shmstate dump SEG --json`"):
    md_keys = [cell for cell, _ in md_first_cells(md_section(title, 3))]
    sub = re.search(rf"^\.SS {re.escape(plain(cli_doc.roff_inline(title)))}\n(.*?)(?=^\.SS |\Z)",
                    plain(man_json), re.S | re.M)
    man_keys = [tag for tag, _ in man_tags(sub.group(1))] if sub else []
    same(f"keys of {title}", **{"docs/cli.md": md_keys, "the man page": man_keys})
    documented[title] = (md_keys, dict(md_first_cells(md_section(title, 3))))

# What the CLI really prints: one object of each kind `new` offers.
seg = f"cli-doc-check-{os.getpid()}"
kinds = re.search(r"^KIND is one of: (.*)\.$", run("new", "--help").stdout, re.M).group(1).split(", ")
try:
    run("create", seg, "--size", "256K")
    for k in kinds:
        r = run("new", seg, k, "o-" + k, *KIND_OPTIONS.get(k, []), check=False)
        if r.returncode != 0:
            sys.exit(f"FAIL: `shmstate new SEG {k} NAME` failed ({r.stderr.strip()}): give the kind defaults, "
                     f"or its options here in KIND_OPTIONS")
    entry = next(e for e in json.loads(run("list", "--json").stdout) if e["name"] == seg)
    dump = json.loads(run("dump", seg, "--json").stdout)
finally:
    run("rm", seg, check=False)
list_keys, _ = documented["`shmstate list --json`"]
dump_keys, dump_rows = documented["`shmstate dump SEG --json`"]
same("keys of a list --json entry", **{"docs/cli.md": sorted(list_keys), "shmstate list --json": sorted(entry)})
same("keys of dump --json", **{"docs/cli.md": sorted(dump_keys), "shmstate dump --json": sorted(dump)})
same("keys of dump --json's segment", **{"list --json": sorted(entry), "dump --json": sorted(dump["segment"])})
for key in sorted(set(dump["allocator"]) - set(re.findall(r'"(\w+)"', dump_rows.get("allocator", "")))):
    fail(f"dump --json's allocator key '{key}' is not documented")
objects_row = dump_rows.get("objects", "")
for o in dump["objects"]:
    for key in sorted(set(o) - set(re.findall(r'"(\w+)"', objects_row))):
        fail(f"dump --json: key '{key}' of a {o['kind']} object is not documented")
for k in kinds:
    if f"`{k}`" not in md_rows.get(next(f for f in md_forms if f.startswith("new ")), ""):
        fail(f"kind {k} (in `shmstate new --help`) is not in docs/cli.md's row of `new`")
if {o["kind"] for o in dump["objects"]} != set(kinds):
    fail(f"dump --json shows kinds {sorted(o['kind'] for o in dump['objects'])}, `new` made {kinds}")

# ---- the man page is clean roff -----------------------------------------------
if shutil.which("groff"):
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", man_page], capture_output=True, text=True)
    if r.returncode != 0 or r.stderr:
        fail(f"groff warns about the man page: {r.stderr}")
else:
    print("note: no groff, the man page's roff is not checked")

if failures:
    for f in failures:
        print("FAIL:", f, file=sys.stderr)
    sys.exit(1)
print(f"ok: {len(help_commands)} commands ({len(md_forms)} forms), {len(help_exits)} exit statuses and the "
      f"--json keys agree in --help, the man page and docs/cli.md; real --json output has only documented keys "
      f"({len(kinds)} kinds)")
