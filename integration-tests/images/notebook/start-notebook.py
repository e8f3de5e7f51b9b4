#!/opt/venv/bin/python
"""Starts the notebook server, as docker-stacks' start-notebook.py does.

Inside a JupyterHub-compatible hub (JUPYTERHUB_API_TOKEN is set) it hands over to
start-singleuser.py; otherwise it runs `jupyter lab` (or DOCKER_STACKS_JUPYTER_CMD) with
NOTEBOOK_ARGS and this script's arguments. `jupyter lab` takes its token from JUPYTER_TOKEN.
"""

import os
import shlex
import sys

if "JUPYTERHUB_API_TOKEN" in os.environ:
    print("start-notebook.py: JUPYTERHUB_API_TOKEN is set: running start-singleuser.py", flush=True)
    command = ["start-singleuser.py", *sys.argv[1:]]
    os.execvp(command[0], command)

command = ["jupyter", os.environ.get("DOCKER_STACKS_JUPYTER_CMD", "lab")]
command += shlex.split(os.environ.get("NOTEBOOK_ARGS", ""))
command += sys.argv[1:]
print("start-notebook.py: executing " + shlex.join(command), flush=True)
os.execvp(command[0], command)
