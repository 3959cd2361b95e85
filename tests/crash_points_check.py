#!/usr/bin/env python3
"""Every crash point is exercised by a test and listed in the README.

A crash point (SHMSTATE_CRASH_POINT("name") in lib/) that no test arms is a
step nobody has proved safe to die at. This check fails when a point in lib/
is not named as a string literal in a test file that calls arm_crash_point,
when a test names a point that does not exist (a stale test), or when the
README's "Crash points" list differs from lib/'s.
Usage: crash_points_check.py SOURCE_ROOT
"""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1])
point_re = re.compile(r'SHMSTATE_CRASH_POINT\("([^"]+)"\)')
points = {}
for path in sorted((root / "lib").rglob("*")):
    if path.suffix in (".cpp", ".hpp") and path.is_file():
        for name in point_re.findall(path.read_text()):
            points.setdefault(name, path.relative_to(root))

literal_re = re.compile(r'"([a-z_]+(?:\.[a-z_]+)+)"')
exercised = {}
for path in sorted((root / "tests").rglob("*.cpp")):
    text = path.read_text()
    if "arm_crash_point" not in text:
        continue
    for name in literal_re.findall(text):
        exercised.setdefault(name, path.relative_to(root))

readme = (root / "README.md").read_text()
section = re.search(r"### Crash points.*?\n(.*?)\n## ", readme, re.S)
listed = set(re.findall(r"`([a-z_]+(?:\.[a-z_]+)+)`", section.group(1))) if section else set()

problems = []
for name, where in sorted(points.items()):
    if name not in exercised:
        problems.append(f"crash point '{name}' ({where}) is armed by no test")
    if name not in listed:
        problems.append(f"crash point '{name}' ({where}) is missing from README.md's 'Crash points' list")
for name in sorted(listed - set(points)):
    problems.append(f"README.md lists crash point '{name}', which lib/ does not have")
component_re = re.compile(r"(segment|registry|atom|blocks|fifo_lock|monitor|signal|file|snapshot)\.[a-z_.]+")
for name, where in sorted(exercised.items()):
    if component_re.fullmatch(name) and name not in points:
        problems.append(f"{where} names crash point '{name}', which lib/ does not have")

for p in problems:
    print(p)
print(f"{len(points)} crash points, {len(problems)} problems")
sys.exit(1 if problems else 0)
