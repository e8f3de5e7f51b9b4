#!/opt/venv/bin/python
"""Starts `jupyterhub-singleuser`, the server a JupyterHub-compatible hub spawns, as
docker-stacks' start-singleuser.py does: NOTEBOOK_ARGS and this script's arguments are passed
on, and the server listens on all interfaces unless NOTEBOOK_ARGS names --ip.
"""

import os
import shlex
import sys

command = ["jupyterhub-singleuser"]
notebook_args = os.environ.get("NOTEBOOK_ARGS", "")
if "--ip=" not in notebook_args:
    command.append("--ip=0.0.0.0")
command += shlex.split(notebook_args)
command += sys.argv[1:]
print("start-singleuser.py: executing " + shlex.join(command), flush=True)
os.execvp(command[0], command)
