"""Running user scripts and installing their requirements.txt (trainer, and model loading)."""
