"""Reports: view models (data.py) and their HTML rendering (html.py)."""
