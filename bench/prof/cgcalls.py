#!/usr/bin/python3
"""Calls per op from a callgrind output file: cgcalls.py callgrind.out N [function...]
Sums the `calls=` lines per called function (all call sites, recursion suffixes folded)."""
import collections, re, sys

path, n = sys.argv[1], int(sys.argv[2])
want = sys.argv[3:] or ["malloc", "free", "realloc", "epoll_wait", "uv_run",
                        "uv_hrtime", "lua_resume", "lua_newthread", "luaE_extendCI", "luaC_step",
                        "lua_newuserdatauv", "luaF_newLclosure", "luaH_new", "luaH_resize",
                        "luaL_ref", "luaL_unref", "lua_pcallk", "luaD_throw"]
names, calls, cfn = {}, collections.Counter(), None
with open(path) as f:
    for line in f:
        m = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
        if m:
            kind, i, name = m.groups()
            if name:
                names[i] = name
            if kind == "cfn":
                cfn = i
            continue
        m = re.match(r"^calls=(\d+)", line)
        if m and cfn:
            calls[names.get(cfn, cfn).split("'")[0]] += int(m.group(1))
            cfn = None
for w in want:
    c = sum(v for k, v in calls.items() if k == w or k.endswith(":" + w) or k.split(" ")[0] == w)
    print(f"  {w:22s} {c / n:8.2f} per op")
