# uvloop: the asyncio benchmark next to this file, unchanged, on uvloop's event loop.
import os, runpy
import uvloop

uvloop.install()
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "asyncio.bench.py"),
               run_name="__main__")
