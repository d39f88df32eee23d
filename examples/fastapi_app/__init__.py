"""A small FastAPI service on mongoengine-async: authors, their books and the
books' manuscripts (GridFS).

``create_app(Settings(...))`` builds the application; ``main.py`` holds the one
that uvicorn serves (see docs/fastapi.md).
"""

from fastapi_app.app import Settings, create_app

__all__ = ("Settings", "create_app")
