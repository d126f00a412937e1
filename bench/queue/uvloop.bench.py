# uvloop: asyncio.bench.py's code unchanged, after uvloop.install().
import os, runpy, sys
sys.argv[0] = "uvloop"
import uvloop  # noqa: F401  (fail early if missing)
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "asyncio.bench.py"),
               run_name="__main__")
