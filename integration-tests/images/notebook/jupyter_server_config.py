# Configuration for every Jupyter server in the image (`jupyter lab` and
# `jupyterhub-singleuser`), as in Jupyter's docker-stacks images: listen on all interfaces of the
# container on JUPYTER_PORT (default 8888) and never try to open a browser.
import os

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)
c.ServerApp.ip = "0.0.0.0"
c.ServerApp.port = int(os.getenv("JUPYTER_PORT", "8888"))
c.ServerApp.open_browser = False
