from emoface.cli import app

app()
