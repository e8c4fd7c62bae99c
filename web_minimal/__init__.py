"""The read-only session page (aiohttp + jinja2), mounted by `open-inspect up` or served alone
with `python -m web_minimal`."""
