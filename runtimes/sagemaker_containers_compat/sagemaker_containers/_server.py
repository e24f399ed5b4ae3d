"""The toolkit's `server` module, imported by serving scripts written for its container.

That container started its model server (gunicorn behind nginx) from here; skmaker's replicas
serve the script themselves, so scripts import this module without needing anything from it.
"""
