"""`python -m deepprobe` runs the same command line as the `deepprobe` script."""
from .cli import app

if __name__ == "__main__":
    app(prog_name="deepprobe")
