"""The application uvicorn serves (from the repository root):
``uvicorn fastapi_app.main:app --app-dir examples``."""

from fastapi_app.app import create_app

app = create_app()
